"""data.prepare: a config's data section to splits; here, what data.on_bad_record: skip does for every shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import chat_record, write_jsonl

from lmtune.api import finetune
from lmtune.config import DataConfig
from lmtune.data.prepare import load_splits
from lmtune.errors import LmtuneError


def _flawed(path: Path, rows: list[dict], bad: dict[int, dict]) -> Path:
    """`rows` with the records of `bad` put at those (1-based) lines."""
    out = list(rows)
    for line, record in sorted(bad.items()):
        out.insert(line - 1, record)
    return write_jsonl(path, out)


def test_skip_leaves_broken_records_out_of_both_splits_and_lists_each(tmp_path):
    train = _flawed(tmp_path / "t.jsonl", [chat_record(i) for i in range(10)], {3: {"messages": "oops"}, 7: {}})
    val = _flawed(tmp_path / "v.jsonl", [chat_record(i) for i in range(4)], {2: {"messages": [{"role": "x"}]}})
    with pytest.raises(LmtuneError, match=r"t.jsonl:3: field 'messages'"):
        load_splits(DataConfig(train=str(train), validation=str(val)), seed=0)
    splits = load_splits(DataConfig(train=str(train), validation=str(val), on_bad_record="skip"), seed=0)
    assert len(splits.train) == 10 and len(splits.validation) == 4
    assert sorted({(Path(e.source).name, e.line) for e in splits.skipped}) == [
        ("t.jsonl", 3),
        ("t.jsonl", 7),
        ("v.jsonl", 2),
    ]
    assert splits.info["train"]["records"] == 12 and splits.info["validation"]["records"] == 5
    assert splits.info["train"]["skipped_records"] == 3
    assert [ex.line for ex in splits.train][:3] == [1, 2, 4]  # the good records, in file order


def test_skip_applies_to_every_source_of_a_mixture_and_never_to_a_file_of_only_broken_records(tmp_path):
    a = _flawed(
        tmp_path / "a.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(6)], {2: {"prompt": 1}}
    )
    b = _flawed(tmp_path / "b.jsonl", [chat_record(i) for i in range(6)], {1: {"messages": []}})
    cfg = DataConfig(train=[{"path": str(a)}, {"path": str(b)}], val_fraction=0, on_bad_record="skip")
    splits = load_splits(cfg, seed=0)
    assert sorted({(Path(e.source).name, e.line) for e in splits.skipped}) == [("a.jsonl", 2), ("b.jsonl", 1)]
    assert len(splits.train) == 12
    only_bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": "x"}, {"messages": "y"}])
    with pytest.raises(LmtuneError, match="2 problems"):
        load_splits(DataConfig(train=str(only_bad), on_bad_record="skip"), seed=0)


def test_a_run_that_skips_warns_and_writes_skipped_records_jsonl(tmp_path):
    train = _flawed(tmp_path / "t.jsonl", [chat_record(i) for i in range(16)], {5: {"messages": "oops"}})
    said: list[tuple[str, bool]] = []
    result = finetune(
        {
            "model": {"name": "preset:tiny-chat"}, "output_dir": str(tmp_path / "run"), "method": {"name": "lora", "r": 4},
            "data": {"train": str(train), "val_fraction": 0.25, "max_length": 64, "on_bad_record": "skip"},
            "forgetting": {"measure": False}, "train": {"max_steps": 2, "batch_size": 4},
        },
        report=lambda text, warning=False: said.append((text, warning)),
    )  # fmt: skip
    (line,) = (result.run_dir / "skipped_records.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line) == {
        "source": str(train), "line": 5, "field": "messages",
        "problem": "must be a list of {role, content} objects, got a string",
    }  # fmt: skip
    assert any(w and "1 broken records were skipped" in text and "t.jsonl:5" in text for text, w in said)


def test_skip_is_refused_with_streaming_which_reads_records_as_it_trains(tmp_path):
    with pytest.raises(ValueError, match=r"not available with data\.streaming"):
        DataConfig(train=str(tmp_path / "t.jsonl"), streaming=True, on_bad_record="skip")
