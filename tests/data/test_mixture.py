"""Mixtures of sources (lmtune/data/mixture.py, lmtune/data/prepare.load_mixture): sizes, seeded draws, config."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError
from support import chat_record, write_jsonl

from lmtune.config import DataConfig, load_config
from lmtune.data.mixture import draw, take_part, weighted_counts
from lmtune.data.prepare import load_splits
from lmtune.errors import LmtuneError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_weighted_counts_sum_to_the_total_in_proportion():
    assert weighted_counts([0.7, 0.3], 200) == [140, 60]
    assert weighted_counts([1, 1, 1], 100) == [34, 33, 33]
    assert sum(weighted_counts([0.5, 0.25, 0.25], 7)) == 7
    assert weighted_counts([0.999, 0.001], 10)[1] == 1  # every weighted source gives at least one


def test_draw_down_samples_without_replacement_and_up_samples_in_whole_passes():
    items = list(range(10))
    few = draw(items, 4, random.Random(1))
    assert len(set(few)) == 4
    many = draw(items, 25, random.Random(1))
    counts = Counter(many)
    assert set(counts) == set(items) and set(counts.values()) == {2, 3}  # as even as can be
    assert draw(items, 25, random.Random(1)) == many  # seeded


def test_take_part_first_n_then_a_seeded_fraction():
    assert take_part(list(range(10)), fraction=None, max_examples=3, rng=random.Random(0)) == [0, 1, 2]
    half = take_part(list(range(10)), fraction=0.5, max_examples=None, rng=random.Random(0))
    assert len(half) == 5 and half == sorted(half)


def _sources(tmp_path: Path) -> tuple[Path, Path]:
    chat = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(30)])
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"q": f"{i} + 1 =", "a": f" {i + 1}"} for i in range(12)])
    return chat, pc


def test_a_weighted_mixture_is_deterministic_under_the_seed(tmp_path):
    chat, pc = _sources(tmp_path)
    train = [
        {"path": str(chat), "weight": 0.5},
        {"path": str(pc), "name": "sums", "weight": 0.5, "columns": {"prompt": "q", "completion": "a"}},
    ]
    cfg = DataConfig(train=train, val_fraction=0.25)
    a, b, c = load_splits(cfg, 1), load_splits(cfg, 1), load_splits(cfg, 2)
    assert a.train == b.train and a.validation == b.validation
    assert a.train != c.train
    info = a.info["train"]["sources"]
    # 22 chat + 9 sums examples left after the 25% carves: 31 in all, half from each (sums up-sampled).
    assert (info["chat"]["available"], info["sums"]["available"]) == (22, 9)
    assert (info["chat"]["examples"], info["sums"]["examples"]) == (16, 15)
    assert info["sums"]["passes"] == pytest.approx(15 / 9)
    assert (info["chat"]["format"], info["sums"]["format"]) == ("messages", "prompt_completion")
    assert a.format == "mixed (messages, prompt_completion)"
    assert set(a.info["validation"]["sources"]) == {"chat", "sums"}
    assert len(a.train) == 31 and [p.name for p in a.parts] == ["chat", "sums"]
    # the fingerprint of a source depends on its own examples only
    assert a.info["train"]["sources"]["chat"]["fingerprint"] != a.info["train"]["sources"]["sums"]["fingerprint"]


def test_fixed_parts_and_a_source_validation_file(tmp_path):
    chat, pc = _sources(tmp_path)
    val = write_jsonl(tmp_path / "pc_val.jsonl", [{"q": "9 + 9 =", "a": " 18"}])
    cols = {"prompt": "q", "completion": "a"}
    train = [
        {"path": str(chat), "max_examples": 10},
        {"path": str(pc), "fraction": 0.5, "columns": cols, "validation": str(val)},
    ]
    splits = load_splits(DataConfig(train=train, val_fraction=0.2), 3)
    info = splits.info["train"]["sources"]
    assert (info["chat"]["examples"], info["pc"]["examples"]) == (8, 6)  # chat: 10, 2 carved; pc: half, its own val
    assert [len(p.validation) for p in splits.parts] == [2, 1]


@pytest.mark.parametrize(
    ("train", "extra", "match"),
    [
        ([{"path": "a.jsonl", "weight": 1}, {"path": "b.jsonl"}], {}, "every source of the mixture or on none"),
        ([{"path": "x/a.jsonl"}, {"path": "y/a.jsonl"}], {}, "share a name"),
        ([{"path": "a.jsonl"}], {"max_examples": 5}, "size of a weighted mixture"),
        ([], {}, "empty list"),
    ],
)
def test_bad_mixtures_are_config_errors(train, extra, match):
    with pytest.raises(ValidationError, match=match):
        DataConfig(train=train, **extra)


def test_a_mixture_is_refused_for_preference_pairs_and_checked_per_source():
    with pytest.raises(LmtuneError, match="task dpo reads pairs"):
        load_config({"task": "dpo", "data": {"train": [{"path": "a.jsonl"}]}})
    sources = [{"path": "a.jsonl", "format": "text"}, {"path": "b.jsonl", "format": "messages"}]
    with pytest.raises(LmtuneError, match="source b: task causal_lm trains on raw text"):
        load_config({"task": "causal_lm", "data": {"train": sources}})
    with pytest.raises(LmtuneError, match="source b holds messages data"):
        load_config({"data": {"train": sources, "overlong": "chunk"}})


@pytest.mark.skipif(not (SHARED / "instruct").is_dir(), reason="../shared/data is not beside the checkout")
def test_code_alpaca_and_dialogsum_mix_by_weight():
    train = [
        {"path": str(SHARED / "instruct" / "code_alpaca_2k.json"), "name": "code", "weight": 3},
        {
            "path": str(SHARED / "dialogsum" / "dialogsum.dev.jsonl"),
            "name": "dialogsum",
            "weight": 1,
            "columns": {"prompt": "dialogue", "completion": "summary"},
            "prompt_template": "Summarize:\n{dialogue}\nSummary: ",
        },
    ]
    # Code Alpaca has two records with an empty output (records 238 and 1857): its first 200 make the pool.
    cfg = DataConfig(train=[{**train[0], "max_examples": 200}, train[1]], val_fraction=0.1)
    splits = load_splits(cfg, 0)
    assert load_splits(cfg, 0).train == splits.train
    info = splits.info["train"]["sources"]
    assert info["code"]["records"] == 2017 and info["code"]["format"] == "instruction"
    assert info["dialogsum"]["format"] == "prompt_completion"
    assert (info["code"]["available"], info["dialogsum"]["available"]) == (180, 450)
    assert (info["code"]["examples"], info["dialogsum"]["examples"]) == (473, 157)  # 3:1 of 630
    assert len(splits.validation) == 20 + 50


def test_data_check_reads_each_source_of_a_mixture(tmp_path, monkeypatch, capsys):
    import yaml
    from support import run_main

    chat, pc = _sources(tmp_path)
    cfg = {"data": {"train": [{"path": str(chat)}, {"path": str(pc), "columns": {"prompt": "q", "completion": "a"}}]}}
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_main(monkeypatch, capsys, "data", "check", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert {"train · chat", "validation · chat", "train · pc", "validation · pc"} <= set(report["splits"])
