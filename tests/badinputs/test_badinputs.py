"""Every case of the malformed-input corpus (tests/badinputs/corpus.py) through `lmtune data check`, and a few
through `lmtune train`: the expected exit code, no traceback, the file and line named, and no input changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from badinputs.corpus import CASES, Case
from support import run_main

TRAIN_CASES = ["jsonl-broken", "jsonl-surrogate", "jsonl-nan", "json-one-object", "csv-ragged", "pair-missing-rejected"]


def write(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / case.filename
    path.write_bytes(case.data)
    return path


def assert_names_the_problem(case: Case, path: Path, output: str) -> None:
    assert "Traceback" not in output
    if case.code == 2:
        assert (f"{path}:{case.where}" if case.where is not None else str(path)) in output, output
    for needle in case.needles:
        assert needle in output, output


def test_the_corpus_is_large_and_varied():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert {c.task for c in CASES} >= {"sft", "classification", "token_classification", "dpo", "reward", "rlhf"}
    assert {Path(c.filename).suffix for c in CASES} >= {".jsonl", ".json", ".csv", ".tsv", ".parquet", ".conll"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_data_check(case, tmp_path, monkeypatch, capsys):
    path = write(case, tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "data", "check", path, "--task", case.task, *case.args,
                              "--show", "200")  # fmt: skip
    assert code == case.code, out + err
    assert_names_the_problem(case, path, out + err)
    assert path.read_bytes() == case.data


@pytest.mark.parametrize("case", [c for c in CASES if c.id in TRAIN_CASES], ids=TRAIN_CASES)
def test_train_refuses_before_writing_anything(case, tmp_path, monkeypatch, capsys):
    path = write(case, tmp_path)
    run_dir = tmp_path / "run"
    sets = [a for a in case.args if a != "--set"]
    args = ["--set", f"data.train={path}", "--set", f"task={case.task}", "--set", "train.max_steps=1"]
    args += ["--set", "train.mixed_precision=no"]  # as the other in-process runs: accelerate keeps the first
    for s in sets:
        args += ["--set", s]
    config = tmp_path / "run.yaml"
    config.write_text("model: {name: 'preset:tiny-chat'}\ndata: {train: x.jsonl}\nmethod: full\n")
    code, out, err = run_main(monkeypatch, capsys, "train", config, *args, "--output-dir", run_dir)
    assert code == 2, out + err
    assert_names_the_problem(case, path, out + err)
    assert path.read_bytes() == case.data
    assert not run_dir.exists()
