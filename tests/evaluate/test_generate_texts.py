"""Batched generation: the same text as one prompt at a time, for decoder-only and encoder-decoder models."""

from __future__ import annotations

import pytest
import torch

from lmtune.data.tokenize import special_affixes
from lmtune.errors import LmtuneError
from lmtune.evaluate.generate import generate_texts, text_generator
from lmtune.model import load_generation_model

PROMPTS = ["Hello there, how are you today?", "a", "The quick brown fox jumps over the lazy dog", "x y"]


def one_at_a_time(model, tokenizer, prompts, **kwargs) -> list[str]:
    return [generate_texts(model, tokenizer, [p], batch_size=1, **kwargs)[0] for p in prompts]


@pytest.mark.parametrize("name", ["preset:tiny-chat", "gpt2", "t5"])
def test_batches_give_the_same_text_as_single_prompts(name, gpt2_dir, t5_dir):
    source = {"gpt2": str(gpt2_dir), "t5": str(t5_dir)}.get(name, name)
    model, tokenizer = load_generation_model(source)
    batched = generate_texts(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=3)
    assert batched == one_at_a_time(model, tokenizer, PROMPTS, max_new_tokens=10)
    assert len(set(batched)) > 1  # different prompts, different (random-model) continuations
    assert model.config.is_encoder_decoder == (name == "t5")


def test_only_the_new_text_is_returned_and_generation_stops_at_eos(tiny_model, tokenizer):
    prefix, _ = special_affixes(tokenizer)
    ids = torch.tensor([[*prefix, *tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]]])
    reference = tiny_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    new = reference[0, ids.shape[1] :].tolist()
    eos = tokenizer.eos_token_id
    new = new[: new.index(eos)] if eos in new else new
    text = generate_texts(tiny_model, tokenizer, ["Once upon a time"], max_new_tokens=12)
    assert text == [tokenizer.decode(new, skip_special_tokens=True)]


def test_chat_prompts_go_through_the_chat_template(tiny_model, tokenizer):
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.startswith("<|im_start|>user")
    chat = generate_texts(tiny_model, tokenizer, ["Hi"], max_new_tokens=8, chat=True)
    assert chat == generate_texts(tiny_model, tokenizer, [rendered], max_new_tokens=8)


def test_sampling_is_seeded_and_training_mode_is_restored(tiny_model, tokenizer):
    tiny_model.train()
    runs = [
        generate_texts(tiny_model, tokenizer, PROMPTS, max_new_tokens=8, temperature=1.5, seed=s) for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1] != runs[2]
    assert tiny_model.training


def test_a_prompt_longer_than_the_context_is_an_error_or_truncated_or_none(gpt2_dir):
    model, tokenizer = load_generation_model(str(gpt2_dir))  # learned positions: 128
    long = "word " * 200
    with pytest.raises(LmtuneError, match="prompt 2 of 2 has"):
        generate_texts(model, tokenizer, ["short", long], max_new_tokens=4)
    assert len(generate_texts(model, tokenizer, [long], max_new_tokens=4, max_input_tokens=100)) == 1
    outputs = text_generator(model, tokenizer, max_new_tokens=4, progress=False)(["short", long])
    assert isinstance(outputs[0], str) and outputs[1] is None


def test_load_generation_model_reports_a_missing_directory(tmp_path):
    with pytest.raises(LmtuneError, match="no such directory"):
        load_generation_model(str(tmp_path / "nope"))


def test_an_empty_prompt_generates_from_a_start_token(tiny_model, tokenizer):
    (text,) = generate_texts(tiny_model, tokenizer, [""], max_new_tokens=6)
    assert isinstance(text, str) and text.strip()
    assert generate_texts(tiny_model, tokenizer, []) == []
