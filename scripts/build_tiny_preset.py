"""Build the offline ``tiny-chat`` model preset in ``lmtune/presets/tiny-chat/``.

The preset is a tokenizer plus a model config, with no weights: lmtune builds the model from ``config.json``
with a seeded random init, which lets the quickstart and the test suite run a real training loop offline and
in seconds.

- Tokenizer: byte-level BPE (vocab 1024) trained here on the quickstart train set plus some general English prose,
  saved as a transformers fast tokenizer with a ChatML chat template (Qwen2 style).
- Model: a 2-layer ``LlamaConfig`` (hidden 64, GQA with 4 query / 2 key-value heads), untied embeddings.

Run ``scripts/make_quickstart_data.py`` first; this script reads ``examples/quickstart/train.jsonl``.

Usage: .venv/bin/python scripts/build_tiny_preset.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# Everything here is local; make any accidental hub lookup fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    TokenizersBackend,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_FILE = REPO_ROOT / "examples" / "quickstart" / "train.jsonl"
PRESET_DIR = REPO_ROOT / "lmtune" / "presets" / "tiny-chat"

VOCAB_SIZE = 1024
MODEL_MAX_LENGTH = 512
# Order fixes the ids: <|endoftext|> must be id 0 (it is the pad token).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
MAX_PRESET_BYTES = 200_000

# Qwen2-style ChatML without Qwen's injected default system prompt, so the rendering depends only on the messages.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# General English prose, written for this script, so the vocabulary is not shaped by the task prompts alone and
# free-form text does not fall apart into single bytes.
PROSE = """\
The morning was quiet, and the river moved slowly past the old stone bridge.
She opened the window and listened to the birds singing in the garden below.
Learning a new skill takes patience, practice, and a willingness to make mistakes.
Most people agree that a good night's sleep makes the next day much easier.
The train left the station a few minutes late, but it arrived on time.
He wrote a short letter to his grandmother and walked it to the post office.
Clear instructions help a team work together without wasting time or effort.
A small change in the recipe made the bread lighter and the crust more golden.
When the storm passed, the children ran outside to splash in the puddles.
The library keeps its rare books in a cool, dry room on the top floor.
Good software is tested carefully, documented clearly, and easy to change.
It is often better to ask a simple question than to guess the answer.
The museum opens at nine o'clock on weekdays and at ten on weekends.
They planted tomatoes, beans, and peppers along the sunny side of the fence.
Every summer the village holds a festival with music, food, and dancing.
A map, a compass, and some water are useful on any long walk in the hills.
The teacher explained the idea twice, and then the whole class understood it.
Scientists measure the temperature of the ocean to learn how the climate changes.
Her favourite book tells the story of a sailor who crosses the sea alone.
Please read the following sentence and answer the question that comes after it.
Numbers can be added, subtracted, multiplied, and divided to solve everyday problems.
The shop on the corner sells fresh fruit, warm bread, and strong coffee.
If you are not sure what a word means, you can look it up in a dictionary.
The meeting was moved to Thursday afternoon because several people were travelling.
Winter nights are long, so the family gathers around the fire to tell stories.
A careful reader notices small details that others might miss.
The project finished early because everyone knew exactly what they had to do.
Thank you for your help; I could not have done this without you.
Water boils at one hundred degrees Celsius at sea level.
The cat slept in a patch of sunlight while the dog watched the door.
Writing down a plan makes it easier to see what has to happen first.
Some questions have short answers, and some need a longer explanation.
The city built a new park with tall trees, a pond, and a playground.
On clear nights you can see thousands of stars far from the city lights.
He checked the results again to make sure there were no errors.
Music, art, and sport give young people many ways to express themselves.
The road winds through the valley and climbs slowly towards the mountains.
Fresh vegetables taste best when they are picked on the day they are eaten.
Before you begin, make sure you have everything you need on the table.
Yes, that is correct. No, that is not quite right. Let me try again.
"""


def training_texts() -> list[str]:
    """Texts the BPE is trained on: each chat message as it appears inside ChatML, plus the prose lines."""
    if not TRAIN_FILE.is_file():
        raise SystemExit(f"{TRAIN_FILE} not found; run scripts/make_quickstart_data.py first")
    texts: list[str] = []
    with TRAIN_FILE.open(encoding="utf-8") as f:
        for line in f:
            for message in json.loads(line)["messages"]:
                # Role names follow <|im_start|> in ChatML, so they are worth merging into single tokens.
                texts.append(f"{message['role']}\n{message['content']}")
    texts.extend(line for line in PROSE.splitlines() if line.strip())
    return texts


def train_tokenizer(texts: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps character offsets covering the leading space, which offset-based masking relies on.
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols, so any input (emoji, accents, other scripts) stays encodable without an unk token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def build_hf_tokenizer(tokenizer: Tokenizer) -> TokenizersBackend:
    return TokenizersBackend(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        model_max_length=MODEL_MAX_LENGTH,
        chat_template=CHAT_TEMPLATE,
        # Byte-level BPE round-trips exactly; the legacy space clean-up would corrupt text like "a , b".
        clean_up_tokenization_spaces=False,
    )


def build_config(vocab_size: int, eos_token_id: int, pad_token_id: int) -> LlamaConfig:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    config.architectures = ["LlamaForCausalLM"]
    return config


def preset_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def verify(directory: Path) -> None:
    """Reload the preset the way lmtune will and check the properties the quickstart depends on."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = AutoConfig.from_pretrained(directory)
    print(f"loaded tokenizer: {type(tokenizer).__name__}, {len(tokenizer)} tokens")
    print(f"loaded config: {type(config).__name__}, vocab_size={config.vocab_size}")

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    print(f"special token ids: {ids}")
    assert ids["<|endoftext|>"] == 0, ids
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == PAD_TOKEN, (
        tokenizer.eos_token,
        tokenizer.pad_token,
    )
    assert tokenizer.bos_token is None, tokenizer.bos_token
    assert config.vocab_size == len(tokenizer), (config.vocab_size, len(tokenizer))
    assert config.eos_token_id == ids[EOS_TOKEN] and config.pad_token_id == ids[PAD_TOKEN]

    sample = "Hello , world!  What is 17 + 25?\n17 + 25 = 42.\tCafé Bogotá ☕ 日本"
    encoded = tokenizer.encode(sample, add_special_tokens=True)
    decoded = tokenizer.decode(encoded)
    assert decoded == sample, (sample, decoded)
    print(f"round-trip ok: {len(sample)} chars -> {len(encoded)} tokens -> identical text")

    messages = [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is 17 + 25?"},
        {"role": "assistant", "content": "17 + 25 = 42."},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    assert rendered == expected, rendered
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n"), prompt
    # Special tokens in rendered text must map to their single ids, not be split into bytes.
    rendered_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert rendered_ids.count(ids["<|im_start|>"]) == len(messages), rendered_ids
    assert rendered_ids.count(ids["<|im_end|>"]) == len(messages), rendered_ids
    assert tokenizer.decode(rendered_ids) == rendered, tokenizer.decode(rendered_ids)
    print("chat template renders ChatML:")
    print(rendered, end="")

    model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {type(model).__name__}, {n_params:,} parameters")

    total = preset_size(directory)
    assert total < MAX_PRESET_BYTES, f"preset is {total} bytes, limit {MAX_PRESET_BYTES}"
    print(f"preset files ({total:,} bytes): {', '.join(sorted(p.name for p in directory.iterdir()))}")


def main() -> None:
    texts = training_texts()
    tokenizer = build_hf_tokenizer(train_tokenizer(texts))
    print(f"trained byte-level BPE on {len(texts)} texts: vocab {len(tokenizer)}")

    # Rebuild from scratch so files from an older layout of the preset cannot linger.
    if PRESET_DIR.exists():
        shutil.rmtree(PRESET_DIR)
    PRESET_DIR.mkdir(parents=True)

    tokenizer.save_pretrained(PRESET_DIR)
    eos_token_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_token_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = build_config(len(tokenizer), eos_token_id, pad_token_id)
    config.save_pretrained(PRESET_DIR)
    GenerationConfig(bos_token_id=None, eos_token_id=eos_token_id, pad_token_id=pad_token_id).save_pretrained(
        PRESET_DIR
    )

    unexpected = [p.name for p in PRESET_DIR.iterdir() if p.suffix not in {".json", ".jinja"}]
    if unexpected:
        raise RuntimeError(f"unexpected files in preset (weights must not be shipped): {unexpected}")
    print(f"wrote {PRESET_DIR.relative_to(REPO_ROOT)}")
    verify(PRESET_DIR)


if __name__ == "__main__":
    main()
