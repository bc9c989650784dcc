"""`lmtune estimate` and `finetune` build the same run through the shared setup (prepare_data, build_model): for
every task the loop trains and every method it supports, the estimate counts the trainable parameters and the
trained tokens that the run then reports."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from support import write_jsonl
from test_task_matrix import METHOD, _rows

from lmtune.api import estimate, finetune
from lmtune.tasks import TASKS

PRESET = "preset:tiny-chat"
PAIRS = [
    (task, method)
    for task, entry in TASKS.items()
    if entry.loop_trained()
    for method in sorted(entry.methods)
    if method != "qlora"  # CUDA only
]
# `make test` runs every task once (lora) and every method once (on sft); `make test-slow` the whole matrix.
QUICK = {(t, "lora") for t, _ in PAIRS} | {("sft", m) for t, m in PAIRS if t == "sft"}
CASES = [pytest.param(t, m, marks=() if (t, m) in QUICK else pytest.mark.slow, id=f"{t}-{m}") for t, m in PAIRS]


def _tagged(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name = rng.choice(["Ada", "Bo", "Cy"])
        rows.append({"tokens": [name, "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]})
    return rows


def _config(tmp_path: Path, task: str, method: str, t5_dir: Path) -> dict[str, Any]:
    shape = "seq2seq" if task == "sft" else task  # prompt/completion records (reward, dpo: pairs)
    make = _tagged if task == "token_classification" else (lambda n, seed: _rows(shape, n, seed))
    data: dict[str, Any] = {"max_length": 64}
    if method in ("prompt_tuning", "prefix_tuning"):
        data["packing"] = False
    return {
        "task": task,
        "model": {"name": str(t5_dir) if task == "seq2seq" else PRESET},
        "method": METHOD[method],
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", make(24, 0))),
            "validation": str(write_jsonl(tmp_path / "val.jsonl", make(4, 1))),
            **data,
        },
        "forgetting": {"measure": False},
        "train": {"batch_size": 4, "max_steps": 2, "mixed_precision": "no", "eval_every": None},
    }


@pytest.mark.parametrize(("task", "method"), CASES)
def test_estimate_counts_what_finetune_trains(tmp_path: Path, t5_dir: Path, task: str, method: str) -> None:
    cfg = _config(tmp_path, task, method, t5_dir)
    est = estimate(cfg)
    summary = finetune(cfg, output_dir=str(tmp_path / "run")).summary
    assert est.trainable_params == summary["trainable_parameters"]
    assert est.total_params == summary["total_parameters"]
    assert est.trained_tokens == summary["trained_tokens"]
    assert est.steps == summary["steps"] == 2


def test_every_task_trained_by_the_loop_is_covered() -> None:
    assert {t for t, _ in PAIRS} == set(TASKS) - {"rlhf"}  # rlhf samples answers through trl
