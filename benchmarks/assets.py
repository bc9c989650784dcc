"""What the throughput benchmark trains on, built offline and cached: a byte-level BPE tokenizer (vocab 8,000)
trained on the shared English text, a random-init ~33M Llama saved once (every runner starts from the very same
weights), the variable-length SFT set and Code Alpaca as prompt/completion JSONL.

Every runner reads the same JSONL and renders an example the same way (prompt + completion + EOS, loss on the
completion only), so trained-token counts agree across runners.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
CACHE = ROOT / "benchmarks" / ".cache"
VOCAB = 8000
# The model: about 33M parameters (hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 8000).
MODEL_SHAPES = {
    "33m": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1376),
    # The GPU check: a ~0.5B-parameter Llama shape (Qwen2.5-0.5B-like widths).
    "500m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=2816),
}


@dataclass(frozen=True)
class Assets:
    tokenizer: Path
    model: Path
    train: Path
    validation: Path
    name: str


def _corpus() -> list[str]:
    """Real English (and some code) to train the tokenizer on and to cut examples from."""
    texts: list[str] = []
    for name in ("dialogsum.dev.jsonl", "dialogsum.test.jsonl"):
        path = SHARED / "dialogsum" / name
        if path.is_file():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                texts.append(rec["dialogue"])
                texts.extend(v for k, v in rec.items() if k.startswith("summary"))
    alpaca = SHARED / "instruct" / "code_alpaca_2k.json"
    if alpaca.is_file():
        for rec in json.loads(alpaca.read_text()):
            texts.extend(v for v in (rec["instruction"], rec["input"], rec["output"]) if v)
    for name in ("general_en.txt", "stories_en.txt"):
        texts.extend(p for p in (ROOT / "lmtune" / "resources" / name).read_text().split("\n\n") if p.strip())
    return texts


def tokenizer_dir() -> Path:
    out = CACHE / "tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(out))
    return out


def model_dir(shape: str = "33m") -> Path:
    out = CACHE / f"llama-{shape}"
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        **MODEL_SHAPES[shape],
    )
    LlamaForCausalLM(config).save_pretrained(str(out))
    return out


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def variable_length_set(n: int, lo: int = 20, hi: int = 400, seed: int = 0) -> Assets:
    """`n` training (+ 200 validation) continuation examples whose token lengths spread uniformly over [lo, hi]:
    a prompt (20-60% of the tokens) and its real continuation, cut from the shared corpus at random places."""
    name = f"varlen-{n}-{lo}-{hi}"
    train, val = CACHE / name / "train.jsonl", CACHE / name / "validation.jsonl"
    if train.is_file() and val.is_file():
        return Assets(tokenizer_dir(), model_dir(), train, val, name)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    ids = tok("\n".join(_corpus()), add_special_tokens=False)["input_ids"]
    rng = random.Random(seed)
    records = []
    for _ in range(n + 200):
        length = rng.randint(lo, hi) - 1  # + EOS
        start = rng.randrange(0, len(ids) - length)
        cut = max(1, round(length * rng.uniform(0.2, 0.6)))
        piece = ids[start : start + length]
        records.append({"prompt": tok.decode(piece[:cut]), "completion": tok.decode(piece[cut:])})
    _write_jsonl(train, records[:n])
    _write_jsonl(val, records[n:])
    return Assets(tokenizer_dir(), model_dir(), train, val, name)


def code_alpaca_set() -> Assets | None:
    """Code Alpaca (2,017 records; the 2 with an empty output dropped) in the Alpaca prompt format, the last 200
    held out for validation. None when ../shared/data is not beside the project."""
    path = SHARED / "instruct" / "code_alpaca_2k.json"
    if not path.is_file():
        return None
    train, val = CACHE / "code-alpaca" / "train.jsonl", CACHE / "code-alpaca" / "validation.jsonl"
    if not (train.is_file() and val.is_file()):
        records = []
        for rec in json.loads(path.read_text()):
            if not rec["output"].strip():
                continue
            head = f"### Instruction:\n{rec['instruction']}\n\n"
            if rec["input"].strip():
                head += f"### Input:\n{rec['input']}\n\n"
            records.append({"prompt": head + "### Response:\n", "completion": rec["output"]})
        rng = random.Random(0)
        rng.shuffle(records)
        _write_jsonl(train, records[:-200])
        _write_jsonl(val, records[-200:])
    return Assets(tokenizer_dir(), model_dir(), train, val, "code-alpaca")


def first(assets: Assets, n: int) -> Assets:
    """The first `n` training examples (the sets are in random order): with n = steps x batch size every runner
    trains exactly one epoch over the very same examples, whatever order its sampler picks."""
    path = assets.train.with_name(f"train-first-{n}.jsonl")
    if not path.is_file():
        lines = assets.train.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:n]))
    return Assets(assets.tokenizer, assets.model, path, assets.validation, assets.name)
