"""`lmtune train CONFIG --cv K`: K ordinary runs on disjoint folds, then mean ± std per metric."""

import json
from collections import Counter
from pathlib import Path

import pytest
from support import run_main, write_jsonl

from lmtune.api import cross_validate
from lmtune.data.load import load_records
from lmtune.errors import LmtuneError


def labelled(i: int) -> dict:
    label = "pos" if i % 3 else "neg"
    return {
        "prompt": f"Review {i}: {'great' if label == 'pos' else 'awful'} movie number {i}\n",
        "completion": label,
        "label": label,
    }


def config(train: Path) -> dict:
    return {
        "data": {"train": str(train), "max_length": 48},
        "method": "full",
        "train": {"max_steps": 2, "batch_size": 4, "mixed_precision": "no"},
        "forgetting": {"measure": False},
    }


def test_folds_are_disjoint_stratified_and_summarised(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [labelled(i) for i in range(18)])
    result = cross_validate(config(train), k=3, output_dir=str(tmp_path / "cv"))
    assert result.stratified and [f["validation"] for f in result.folds] == [6, 6, 6]
    held = [
        [r.data["prompt"] for r in load_records(str(tmp_path / f"cv/folds/fold-{i}/validation.jsonl"))]
        for i in (1, 2, 3)
    ]
    assert sorted(p for fold in held for p in fold) == sorted(labelled(i)["prompt"] for i in range(18))
    for i in (1, 2, 3):  # every fold keeps the 1:2 class balance
        labels = Counter(r.data["label"] for r in load_records(str(tmp_path / f"cv/folds/fold-{i}/validation.jsonl")))
        assert labels == {"neg": 2, "pos": 4}
    losses = [f["best_val_loss"] for f in result.folds]
    assert result.mean["best_val_loss"] == pytest.approx(sum(losses) / 3)
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["k"] == 3 and saved["std"]["best_val_loss"] == pytest.approx(result.std["best_val_loss"])
    assert (tmp_path / "cv" / "fold-2" / "report.html").is_file()


def test_too_few_records_per_class_is_refused(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [labelled(i) for i in range(4)])
    with pytest.raises(LmtuneError, match="class 'neg' has only 2 records"):
        cross_validate(config(train), k=3, output_dir=str(tmp_path / "cv"))


def test_cli_cv_prints_mean_and_std(tmp_path: Path, monkeypatch, capsys) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"Say {i}\n", "completion": str(i)} for i in range(8)])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(config(train)), encoding="utf-8")
    code, stdout, stderr = run_main(monkeypatch, capsys, "train", cfg, "--cv", "2", "-o", tmp_path / "cv")
    assert code == 0, stderr
    assert "2-fold cross-validation" in stdout and "best_val_loss" in stdout and "cv.json" in stdout
