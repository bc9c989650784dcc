"""`lmtune runs [DIR]` and `lmtune runs compare`: run directories read leniently, status, sorting, the compare page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import run_main

from lmtune.api.leaderboard import compare_runs, list_runs
from lmtune.errors import LmtuneError


def make_run(path: Path, lr: float, val: list[float], *, summary: dict | None = None, **files: Any) -> Path:
    path.mkdir(parents=True)
    cfg = {"name": path.name, "task": "classification", "model": {"name": "m"}, "method": {"name": "full"},
           "train": {"lr": lr, "epochs": 2, "batch_size": 8}}  # fmt: skip
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    records = [{"split": "train", "step": s, "loss": 1.0 / s, "time": 0.5 * s} for s in (1, 2, 3)]
    records += [{"split": "validation", "step": i, "loss": 1.0 - v, "accuracy": v} for i, v in enumerate(val)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"cut sh')
    if summary is not None:
        (path / "summary.json").write_text(json.dumps({"steps": 3, "train_time_s": 1.5, **summary}))
    for name, data in files.items():
        (path / f"{name}.json").write_text(json.dumps(data))
    return path


def test_table_status_best_validation_and_sorting(tmp_path: Path) -> None:
    make_run(tmp_path / "a", 1e-4, [0.5, 0.7, 0.6], summary={}, eval={"metrics": {"tuned": {"accuracy": 0.66}}})
    make_run(tmp_path / "b", 3e-4, [0.5, 0.8], summary={"diverged": True})
    make_run(tmp_path / "study" / "trials" / "trial-000", 1e-3, [0.5, 0.55], trial={"state": "pruned"})
    make_run(tmp_path / "c", 2e-4, [0.5])  # crashed: metrics only
    (tmp_path / "a" / "final").mkdir()
    (tmp_path / "a" / "final" / "config.yaml").write_text("{}")  # not a run of its own
    rows = list_runs(tmp_path, sort="val_accuracy", descending=True)
    assert [r.name for r in rows] == ["b", "a", "trial-000", "c"]  # c has no evaluation after step 0: last
    assert {r.name: r.status for r in rows} == {"a": "finished", "b": "failed", "trial-000": "pruned",
                                               "c": "interrupted"}  # fmt: skip
    a = rows[1]
    assert a.best_validation["accuracy"] == 0.7 and a.best_validation["loss"] == pytest.approx(0.3)
    assert a.hyperparameters["train.lr"] == 1e-4 and a.eval == {"accuracy": 0.66} and a.steps == 3
    assert rows[3].steps == 3 and rows[3].time_s == 1.5  # from the metrics when there is no summary
    assert [r.name for r in list_runs(tmp_path, sort="train.lr")] == ["a", "c", "b", "trial-000"]
    with pytest.raises(LmtuneError, match="not a directory"):
        list_runs(tmp_path / "nope")


def test_compare_page_and_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    a = make_run(tmp_path / "a", 1e-4, [0.5, 0.7], summary={}, eval={"metrics": {"tuned": {"accuracy": 0.66}}})
    b = make_run(tmp_path / "b", 3e-4, [0.5, 0.8], summary={})
    page = compare_runs([a, b], tmp_path / "cmp.html").read_text()
    assert page.count("data:image/png") == 1 and "<script" not in page
    assert "train.lr" in page and "train.epochs" not in page  # only the keys that differ
    assert "0.66" in page and "best validation accuracy" in page
    with pytest.raises(LmtuneError, match="at least two"):
        compare_runs([a])
    code, out, _ = run_main(monkeypatch, capsys, "runs", tmp_path, "--json", "--sort", "name")
    assert code == 0 and [r["name"] for r in json.loads(out)["runs"]] == ["a", "b"]
    code, out, _ = run_main(monkeypatch, capsys, "runs", "compare", a, b, "-o", tmp_path / "c2.html")
    assert code == 0 and (tmp_path / "c2.html").is_file()
    code, _, err = run_main(monkeypatch, capsys, "runs", tmp_path / "missing")
    assert code == 2 and "not a directory" in err
