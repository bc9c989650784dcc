"""A diverging run stops with its last good weights (issue 14): exit code 3, no checkpoint with non-finite weights,
final/ = the last good checkpoint's weights, summary.json marked diverged, and JSON without NaN anywhere."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from support import chat_record, run_main, write_jsonl

from lmtune.api import finetune
from lmtune.errors import DivergedError
from lmtune.fileio import atomic_write_json
from lmtune.rundir import MetricsLog


def strict_json(text: str) -> Any:
    """Parse as standard JSON: Python's json accepts NaN/Infinity literals, which other readers refuse."""

    def refuse(literal: str) -> None:
        raise AssertionError(f"non-standard JSON literal {literal}")

    return json.loads(text, parse_constant=refuse)


def diverging(tmp_path: Path, **train: Any) -> dict[str, Any]:
    data = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(64)])
    return {
        "name": "diverge",
        "seed": 7,
        "data": {"train": str(data), "val_fraction": 0.1, "max_length": 64},
        "method": {"name": "full"},
        # A learning rate of 1e8 without clipping: the loss is NaN from step 2 on (from the first update's weights).
        "train": {
            "max_steps": 30,
            "batch_size": 4,
            "lr": 1e8,
            "max_grad_norm": None,
            "warmup_steps": 0,
            "mixed_precision": "no",
            "save_every": 1,
            **train,
        },
        "forgetting": {"measure": False},
    }


def test_a_diverging_run_stops_and_keeps_its_last_good_weights(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(DivergedError) as caught:
        finetune(diverging(tmp_path), output_dir=str(run_dir))
    assert caught.value.exit_code == 3 and "lower train.lr" in str(caught.value)
    summary = strict_json((run_dir / "summary.json").read_text())
    assert summary["diverged"] is True and summary["stopped_at"] < 30 and "train.lr" in summary["advice"]
    assert summary["skipped_updates"] == 4  # train.max_bad_steps defaults to 3: the fourth stops the run
    assert summary["diagnosis"][0]["kind"] == "diverged"  # what the report and the model card lead with
    assert "stopped being finite" in (run_dir / "report.html").read_text()
    records = [strict_json(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for r in records if r.get("skipped")) == 4
    # Every checkpoint left holds finite weights, and final/ is the last one of them.
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    assert checkpoints, "the run wrote no checkpoint before diverging; lower save_every in this test"
    for ckpt in checkpoints:
        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "trainable.safetensors")).values())
        assert int(ckpt.name.removeprefix("step-")) < summary["diverged_at"]
    last = load_file(str(checkpoints[-1] / "trainable.safetensors"))
    final = load_file(str(run_dir / "final" / "model.safetensors"))
    assert summary["final_step"] == int(checkpoints[-1].name.removeprefix("step-"))
    for name, tensor in last.items():
        assert torch.equal(final[name], tensor), name


def test_diverging_before_the_first_checkpoint_writes_no_final_model(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(DivergedError, match="final/ was not written"):
        finetune(diverging(tmp_path, save_every=100, max_bad_steps=0), output_dir=str(run_dir))
    assert not (run_dir / "final").exists()
    assert strict_json((run_dir / "summary.json").read_text())["final_step"] is None


def test_with_early_stopping_final_holds_the_best_evaluated_weights(tmp_path):
    run_dir = tmp_path / "run"
    config = diverging(tmp_path, eval_every=1, early_stopping={"patience": 100})
    with pytest.raises(DivergedError, match="final/ holds the weights of step"):
        finetune(config, output_dir=str(run_dir))
    summary = strict_json((run_dir / "summary.json").read_text())
    best = summary["final_step"]
    assert summary["diverged"] is True and best == summary["early_stopping"]["best_step"]
    kept = load_file(str(run_dir / "checkpoints" / f"best-{best:06d}" / "trainable.safetensors"))
    final = load_file(str(run_dir / "final" / "model.safetensors"))
    assert all(torch.equal(final[name], tensor) for name, tensor in kept.items())


def test_the_cli_exits_3_without_a_traceback(tmp_path, monkeypatch, capsys):
    config = tmp_path / "diverge.yaml"
    config.write_text(yaml.safe_dump(diverging(tmp_path, max_bad_steps=1)))
    code, _, err = run_main(monkeypatch, capsys, "train", config, "--output-dir", tmp_path / "run")
    assert code == 3, err
    assert "training diverged" in err and "Traceback" not in err and "hint: lower train.lr" in err


def test_run_files_hold_null_for_non_finite_numbers(tmp_path):
    atomic_write_json(tmp_path / "s.json", {"loss": math.nan, "xs": [math.inf, 1.5, -math.inf]})
    assert strict_json((tmp_path / "s.json").read_text()) == {"loss": None, "xs": [None, 1.5, None]}
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1, "loss": math.nan})
    log.append({"step": 2, "loss": 2.0})
    log.truncate_after(2)
    assert [strict_json(line) for line in log.path.read_text().splitlines()] == [
        {"step": 1, "loss": None},
        {"step": 2, "loss": 2.0},
    ]
