"""Preference data as users have it: a reward model on an encoder whose tokenizer has no EOS (BERT-style), trained
on a file with broken records (data.on_bad_record: skip, listed by line), and `lmtune eval` on reward and DPO runs
scoring held-out pairs exactly as the validation pass did."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from support import save_tiny_bert, write_jsonl
from transformers import BertForSequenceClassification

from lmtune.api import finetune
from lmtune.api.evaluate import evaluate_run
from lmtune.errors import LmtuneError

THINGS = ["cat", "dog", "sun", "tree", "boat", "bird", "fish", "star"]
WORDS = [*THINGS, "tell", "me", "about", "the", "and", "are", "good", "bad", "."]


def pairs(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(THINGS, 2)
        out.append({"prompt": f"tell me about the {a} .", "chosen": f" the {b} and {a} are good .",
                    "rejected": f" the {a} and {b} are bad ."})  # fmt: skip
    return out


def test_reward_on_a_no_eos_encoder_skips_broken_records_and_is_evaluated(tmp_path: Path) -> None:
    bert = save_tiny_bert(tmp_path / "bert", WORDS, BertForSequenceClassification)
    rows = pairs(40, 0)
    rows[3] = {**rows[3], "chosen": "  "}  # an empty answer
    rows[7] = {"prompt": "tell me", "chosen": " good"}  # no rejected answer
    train = write_jsonl(tmp_path / "pairs.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", pairs(12, 1))
    cfg = {
        "task": "reward", "model": {"name": str(bert)}, "method": "full", "forgetting": {"measure": False},
        "data": {"train": str(train), "validation": str(val), "max_length": 32},
        "train": {"lr": 3e-3, "epochs": 1, "batch_size": 8, "mixed_precision": "no"},
    }  # fmt: skip
    with pytest.raises(LmtuneError, match=r"pairs.jsonl:4.*pairs.jsonl:8|pairs.jsonl:4"):
        finetune(cfg, output_dir=str(tmp_path / "refused"))

    cfg["data"]["on_bad_record"] = "skip"
    result = finetune(cfg, output_dir=str(tmp_path / "run"))
    skipped = [json.loads(line) for line in (result.run_dir / "skipped_records.jsonl").read_text().splitlines()]
    assert [(s["line"], s["field"]) for s in skipped] == [(4, "chosen"), (8, "rejected")]
    info = json.loads((result.run_dir / "data.json").read_text())["splits"]["train"]
    assert info["skipped_records"] == 2 and info["examples"] == 38

    # lmtune eval scores the validation pairs as the last validation pass did (the tokenizer has no EOS: the
    # answer is the text pair's second segment, after [SEP]).
    s = result.summary
    ev = evaluate_run(result.run_dir)
    scores = ev.metrics["tuned"]
    assert ev.data["examples"] == 12 and ev.data["truncated"] == 0
    assert scores["accuracy"] == pytest.approx(s["val_accuracy_final"])
    assert scores["margin"] == pytest.approx(s["val_margin_final"], rel=1e-4)
    low, high = scores["accuracy_ci"]
    assert low <= scores["accuracy"] <= high
    with pytest.raises(LmtuneError, match="scored on preference pairs"):
        evaluate_run(result.run_dir, baselines=["zero-shot"])


def test_dpo_run_is_evaluated_on_held_out_pairs(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "pairs.jsonl", pairs(40, 0))
    val = write_jsonl(tmp_path / "val.jsonl", pairs(8, 1))
    cfg = {
        "task": "dpo", "method": "lora", "forgetting": {"measure": False},
        "data": {"train": str(train), "validation": str(val)},
        "train": {"lr": 5e-3, "epochs": 1, "batch_size": 8, "mixed_precision": "no"},
    }  # fmt: skip
    result = finetune(cfg, output_dir=str(tmp_path / "dpo"))
    s = result.summary
    scores = evaluate_run(result.run_dir, data=str(val)).metrics["tuned"]
    assert scores["accuracy"] == pytest.approx(s["val_accuracy_final"])
    assert scores["margin"] == pytest.approx(s["val_margin_final"], rel=1e-3, abs=1e-4)
