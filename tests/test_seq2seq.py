"""task seq2seq: an encoder-decoder (a tiny random T5) fine-tuned on DialogSum prompt/completion data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from support import REPO, chat_record, write_jsonl

from lmtune.api import finetune
from lmtune.api.evaluate import evaluate_run
from lmtune.config import ModelConfig, load_config
from lmtune.data.batching import collate, unpacked
from lmtune.data.formats import PromptCompletionExample
from lmtune.data.tokenize import special_affixes, tokenize_seq2seq
from lmtune.data.types import IGNORE
from lmtune.errors import LmtuneError
from lmtune.evaluate.generate import generate
from lmtune.export import load_tuned
from lmtune.model import load_model, load_tokenizer
from lmtune.tasks import TASKS
from lmtune.train.objectives import seq2seq_loss
from lmtune.train.validation import evaluate_loss

DIALOGSUM = REPO.parent / "shared" / "data" / "dialogsum"
PROMPT = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "


def _records(name: str, n: int) -> list[dict[str, Any]]:
    path = DIALOGSUM / name
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


@pytest.fixture(scope="module")
def dialogsum(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first 40 dev dialogues to train on and 5 test dialogues with their three reference summaries."""
    root = tmp_path_factory.mktemp("dialogsum")
    train = write_jsonl(root / "train.jsonl", _records("dialogsum.dev.jsonl", 40))
    test = write_jsonl(root / "test.jsonl", _records("dialogsum.test.jsonl", 5))
    return train, test


def _config(model: Path, train: Path, method: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": "seq2seq",
        "seed": 3,
        "model": {"name": str(model)},
        "data": {
            "train": str(train),
            "columns": {"prompt": "dialogue", "completion": "summary"},
            "prompt_template": PROMPT,
            "max_length": 48,
            "val_fraction": 0.2,
        },
        "method": method,
        "train": {"max_steps": 8, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0, "mixed_precision": "no"},
    }


def _examples(tokenizer: Any, n: int = 4) -> list[PromptCompletionExample]:
    # Prompts longer than their answers, so the encoder and decoder batches have different widths.
    return [
        PromptCompletionExample(f"question {i} " * (i + 3), f"answer {i} " * (i + 1), "t.jsonl", i + 1)
        for i in range(n)
    ]


def test_encoding_puts_the_prompt_in_the_encoder_and_the_completion_in_the_decoder(tokenizer) -> None:
    prefix, suffix = special_affixes(tokenizer)
    ex = PromptCompletionExample("Summarize: hello there", "a greeting", "t.jsonl", 1)
    (tok,), stats = tokenize_seq2seq([ex], tokenizer, max_length=64)
    body = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
    assert tok.input_ids == [*prefix, *body, *suffix] and set(tok.labels) == {IGNORE}
    assert tok.decoder_labels is not None and tok.decoder_labels[-1] == tokenizer.eos_token_id
    assert tok.decoder_labels[len(prefix) : len(prefix) + len(target)] == target
    assert (stats.kept, stats.truncated, stats.trained_tokens) == (1, 0, len(tok.decoder_labels))

    long = PromptCompletionExample("word " * 100, "summary " * 100, "t.jsonl", 2)
    (cut,), stats = tokenize_seq2seq([long], tokenizer, max_length=16)
    assert len(cut.input_ids) == 16 and cut.input_ids[: len(prefix) + 3] == [*prefix, *body_of(tokenizer, long)[:3]]
    assert len(cut.decoder_labels or []) == 16 and (cut.decoder_labels or [])[-1] == tokenizer.eos_token_id
    assert stats.truncated == 1
    assert tokenize_seq2seq([long], tokenizer, max_length=16, overlong="drop")[1].dropped == 1


def body_of(tokenizer: Any, ex: PromptCompletionExample) -> list[int]:
    return tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]


def test_seq2seq_loss_is_the_models_own_loss_summed(t5_dir: Path, tokenizer) -> None:
    model = load_model(ModelConfig(name=str(t5_dir)), "seq2seq").eval()
    rows = unpacked(tokenize_seq2seq(_examples(tokenizer), tokenizer, max_length=64)[0])
    batch = collate(rows, tokenizer.pad_token_id)
    assert batch["labels"].shape[1] == max(len(r.decoder_labels or []) for r in rows) != batch["input_ids"].shape[1]
    with torch.no_grad():
        out = model(**batch)
    total, n = seq2seq_loss(out.logits, batch["labels"])
    assert n == sum(r.trained_tokens for r in rows) == int((batch["labels"] != IGNORE).sum())
    # transformers averages over the target tokens; ours is the sum and the count, for token-normalised steps.
    assert float(total) / n == pytest.approx(float(out.loss), rel=1e-5)


@pytest.mark.parametrize(
    "method", [{"name": "full"}, {"name": "lora", "r": 8, "alpha": 16, "target_modules": ["q", "v"]}]
)
def test_seq2seq_run_learns_reloads_and_evaluates(tmp_path: Path, t5_dir: Path, dialogsum, method) -> None:
    train, test = dialogsum
    result = finetune(_config(t5_dir, train, method), output_dir=str(tmp_path / "run"))
    s = result.summary
    assert s["val_loss_after"] < s["val_loss_before"] - 0.5
    assert "not measured" in s["forgetting_skipped"] and "forgetting" not in s

    # The reloaded model scores the validation split exactly as the in-memory model did after its last step.
    model, tokenizer, cfg = load_tuned(result.run_dir)
    assert model.config.is_encoder_decoder and cfg.task == "seq2seq"
    assert type(model).__name__.startswith("Peft") == (method["name"] == "lora")
    from lmtune.data.prepare import load_splits

    val = unpacked(tokenize_seq2seq(load_splits(cfg.data, cfg.seed).validation, tokenizer, max_length=48)[0])
    again = evaluate_loss(
        model, val, 8, tokenizer.pad_token_id, Accelerator(mixed_precision="no", cpu=True), TASKS["seq2seq"].objective
    )
    assert again["loss"] == pytest.approx(s["val_loss_after"], rel=1e-5)

    text = generate(result.run_dir, prompt="#Person1#: Hi.\n#Person2#: Hello.", max_new_tokens=8)
    assert isinstance(text, str)

    ev = evaluate_run(
        result.run_dir,
        data=str(test),
        references=["summary1", "summary2", "summary3"],
        baselines=["zero-shot"],
        max_new_tokens=8,
    )
    assert ev.data["examples"] == 5 and ev.data["references_per_example"] == 3
    assert set(ev.metrics) == {"tuned", "zero-shot"} and "rougeL" in ev.metrics["tuned"]
    assert (result.run_dir / "eval.json").is_file()


def test_seq2seq_refuses_decoder_only_models_chat_data_packing_and_other_methods(tmp_path: Path, t5_dir) -> None:
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"q {i}", "completion": f"a {i}"} for i in range(10)])
    base = {"task": "seq2seq", "data": {"train": str(pc)}, "method": "full", "train": {"mixed_precision": "no"}}
    with pytest.raises(LmtuneError, match=r"encoder-decoder model.*preset:tiny-chat is a decoder-only preset") as e:
        finetune(base, output_dir=str(tmp_path / "preset"))
    assert "flan-t5" in (e.value.hint or "")
    with pytest.raises(LmtuneError, match="method ia3 does not support task 'seq2seq'"):
        finetune({**base, "method": "ia3", "model": {"name": str(t5_dir)}}, output_dir=str(tmp_path / "ia3"))
    with pytest.raises(LmtuneError, match="packing"):
        load_config({**base, "data": {"train": str(pc), "packing": True}})
    with pytest.raises(LmtuneError, match="chat data and raw text are not supported for seq2seq"):
        load_config({**base, "data": {"train": str(pc), "format": "messages"}})
    # Chat records found by format detection are refused when tokenized, naming the file and line.
    chat = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(10)])
    cfg = {**base, "model": {"name": str(t5_dir)}, "data": {"train": str(chat)}}
    with pytest.raises(LmtuneError, match=r"chat.jsonl:\d+: task seq2seq needs prompt/completion"):
        finetune(cfg, output_dir=str(tmp_path / "chat"))


def test_tokenizer_of_tiny_t5_is_the_preset_tokenizer(t5_dir: Path) -> None:
    # The tests above rely on the fixture's tokenizer being the preset's (no T5 sentencepiece model offline).
    assert len(load_tokenizer(ModelConfig(name=str(t5_dir)))) == len(
        load_tokenizer(ModelConfig(name="preset:tiny-chat"))
    )
