from __future__ import annotations

import json
from collections import Counter

import pytest
from support import run_cli, write_jsonl

from lmtune.data.load import load_records
from lmtune.data.records_io import file_sha256
from lmtune.data.split import carve_validation, split_file, split_records
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError


def test_same_seed_same_split_other_seed_other_split():
    items = list(range(100))
    assert carve_validation(items, 0.2, seed=1) == carve_validation(items, 0.2, seed=1)
    assert carve_validation(items, 0.2, seed=1)[1] != carve_validation(items, 0.2, seed=2)[1]


def test_parts_are_disjoint_complete_and_keep_the_original_order():
    items = [f"ex{i}" for i in range(50)]
    train, validation = carve_validation(items, 0.1, seed=7)
    assert len(validation) == 5 and len(train) == 45
    assert set(train).isdisjoint(validation)
    assert sorted(train + validation) == sorted(items)
    assert train == [x for x in items if x in train]
    assert validation == [x for x in items if x in validation]
    assert validation != items[:5]  # shuffled, not the head of the list


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(10, 0.01, 1), (10, 0.26, 3), (3, 0.5, 2), (2, 0.9, 1), (1000, 0.05, 50)],
)
def test_validation_size_is_rounded_at_least_one_and_leaves_training_data(n, fraction, expected):
    train, validation = carve_validation(list(range(n)), fraction, seed=0)
    assert len(validation) == expected and len(train) == n - expected


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan")])
def test_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(LmtuneError, match="between 0 and 1"):
        carve_validation([1, 2, 3], fraction, seed=0)


@pytest.mark.parametrize("items", [[], ["only"]])
def test_too_few_examples_is_refused(items):
    with pytest.raises(LmtuneError, match="at least 2 are needed"):
        carve_validation(items, 0.5, seed=0)


# --- split_records / split_file ------------------------------------------------------------------


def records(n: int, **fields) -> list[Record]:
    """n records; each keyword gives a function of the index for that field."""
    return [
        Record({"text": f"example {i}", **{k: f(i) for k, f in fields.items()}}, "d.jsonl", i + 1) for i in range(n)
    ]


def lines(parts: dict[str, list[Record]]) -> dict[str, list[int]]:
    return {name: [r.line for r in part] for name, part in parts.items()}


def test_split_is_seeded_complete_disjoint_and_keeps_the_original_order():
    data = records(100)
    parts = lines(split_records(data, val=0.1, test=0.2, seed=3))
    assert parts == lines(split_records(data, val=0.1, test=0.2, seed=3))
    assert parts != lines(split_records(data, val=0.1, test=0.2, seed=4))
    assert {name: len(p) for name, p in parts.items()} == {"train": 70, "validation": 10, "test": 20}
    assert sorted(line for part in parts.values() for line in part) == list(range(1, 101))
    assert all(p == sorted(p) for p in parts.values())


def test_a_zero_fraction_leaves_that_part_out():
    assert set(split_records(records(10), val=0.2, test=0)) == {"train", "validation"}
    assert set(split_records(records(10), val=0, test=0.2)) == {"train", "test"}


def test_stratified_parts_keep_each_class_proportion():
    data = records(200, label=lambda i: "a" if i % 10 < 5 else "b" if i % 10 < 8 else "c")  # 100 / 60 / 40
    parts = split_records(data, val=0.1, test=0.2, stratify="label", seed=0)
    counts = {name: Counter(r.data["label"] for r in part) for name, part in parts.items()}
    assert counts["test"] == {"a": 20, "b": 12, "c": 8}
    assert counts["validation"] == {"a": 10, "b": 6, "c": 4}
    assert counts["train"] == {"a": 70, "b": 42, "c": 28}


def test_group_aware_split_puts_each_group_on_one_side():
    data = records(120, user=lambda i: f"u{i % 37}")  # groups of 3 or 4 records
    parts = split_records(data, val=0.1, test=0.2, group_by="user", seed=1)
    owners = {}
    for name, part in parts.items():
        for r in part:
            assert owners.setdefault(r.data["user"], name) == name
    assert len(parts["test"]) > 0 and len(parts["validation"]) > 0
    assert sum(len(p) for p in parts.values()) == 120


def test_stratified_and_grouped_together():
    data = records(200, user=lambda i: f"u{i % 50}", label=lambda i: "pos" if i % 50 < 20 else "neg")
    parts = split_records(data, val=0.1, test=0.1, stratify="label", group_by="user", seed=0)
    users = {name: {r.data["user"] for r in part} for name, part in parts.items()}
    assert users["train"].isdisjoint(users["test"]) and users["train"].isdisjoint(users["validation"])
    assert users["validation"].isdisjoint(users["test"])
    for part in parts.values():
        assert {r.data["label"] for r in part} == {"pos", "neg"}


def test_missing_or_null_field_names_file_line_and_field():
    data = records(10, label=lambda i: "x")
    data[6] = Record({"text": "no label"}, "d.jsonl", 7)
    with pytest.raises(DataError, match=r"d\.jsonl:7: field 'label': missing") as info:
        split_records(data, stratify="label")
    assert "--stratify" in str(info.value)
    data = records(10, user=lambda i: f"u{i}")
    data[6] = Record({"text": "null group", "user": None}, "d.jsonl", 7)
    with pytest.raises(DataError, match=r"d\.jsonl:7: field 'user': is null"):
        split_records(data, group_by="user")


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [
        (-0.1, 0.1, "--val must be a fraction"),
        (0.1, 1.0, "--test must be a fraction"),
        (0.5, 0.5, "leave nothing"),
        (0, 0, "both 0"),
        (float("nan"), 0.1, "--val must be a fraction"),
    ],
)
def test_fractions_out_of_range_are_refused(val, test, message):
    with pytest.raises(LmtuneError, match=message):
        split_records(records(20), val=val, test=test)


def test_too_few_examples_of_a_class_names_the_class_and_its_count():
    data = records(30, label=lambda i: "rare" if i == 29 else "common")
    with pytest.raises(LmtuneError, match=r"class 'rare' has only 1 record\(s\) \(first at d\.jsonl:30\)"):
        split_records(data, stratify="label")


def test_more_classes_than_a_part_can_hold_is_refused():
    data = records(40, label=lambda i: f"c{i % 8}")
    with pytest.raises(LmtuneError, match="the test part would hold 2 record"):
        split_records(data, val=0.5, test=0.05, stratify="label")


def test_too_few_groups_is_refused():
    with pytest.raises(LmtuneError, match="--group-by user: 1 distinct value"):
        split_records(records(10, user=lambda i: "same"), group_by="user")


def test_split_file_writes_parts_and_a_manifest_whose_hashes_match(tmp_path):
    source = tmp_path / "data.jsonl"
    rows = [{"text": f"t{i}", "label": "ab"[i % 2], "extra": {"n": i}} for i in range(40)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = split_file(str(source), tmp_path / "out", val=0.25, test=0.25, stratify="label", seed=7)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == result.manifest
    assert (manifest["seed"], manifest["records"], manifest["fractions"]) == (7, 40, {"validation": 0.25, "test": 0.25})
    assert manifest["options"]["stratify"] == "label" and manifest["source_sha256"] == file_sha256(source)
    written = []
    for name, part in manifest["splits"].items():
        path = tmp_path / "out" / part["path"]
        assert path.name == f"{name}.jsonl"
        assert part["sha256"] == file_sha256(path)
        loaded = [r.data for r in load_records(str(path))]
        assert len(loaded) == part["count"]
        assert part["labels"] == dict(Counter(r["label"] for r in loaded))
        written += loaded
    assert sorted(written, key=lambda r: r["extra"]["n"]) == rows  # records unchanged, none lost


def test_split_file_keeps_the_csv_format(tmp_path):
    source = tmp_path / "data.csv"
    source.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(20)), encoding="utf-8")
    result = split_file(str(source), tmp_path / "out", val=0.1, test=0.1)
    assert sorted(p["path"] for p in result.manifest["splits"].values()) == ["test.csv", "train.csv", "validation.csv"]
    assert (tmp_path / "out" / "test.csv").read_text(encoding="utf-8").startswith("text,label\n")


def test_split_file_refuses_to_overwrite_unless_asked(tmp_path):
    source = write_jsonl(tmp_path / "data.jsonl", [{"text": f"t{i}"} for i in range(20)])
    split_file(str(source), tmp_path / "out")
    before = (tmp_path / "out" / "train.jsonl").read_bytes()
    with pytest.raises(LmtuneError, match="already exist") as info:
        split_file(str(source), tmp_path / "out", seed=1)
    assert "--overwrite" in str(info.value)
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == before
    result = split_file(str(source), tmp_path / "out", seed=1, test=0, overwrite=True)
    assert set(result.manifest["splits"]) == {"train", "validation"}
    assert not (tmp_path / "out" / "test.jsonl").exists()  # no stale part beside the new manifest


def test_split_file_never_writes_over_its_input(tmp_path):
    source = write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}"} for i in range(20)])
    with pytest.raises(LmtuneError, match="would write over the input"):
        split_file(str(source), tmp_path, overwrite=True)


def test_cli_split_json_is_the_manifest_and_bad_input_exits_2(tmp_path):
    source = write_jsonl(tmp_path / "data.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(30)])
    result = run_cli("data", "split", source, "--out", tmp_path / "out", "--stratify", "label", "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert {name: p["count"] for name, p in manifest["splits"].items()} == {"train": 24, "validation": 3, "test": 3}
    assert manifest["manifest"] == str(tmp_path / "out" / "manifest.json")
    human = run_cli("data", "split", source, "--out", tmp_path / "out2", "--test", "0")
    assert human.returncode == 0 and "validation" in human.stdout and "manifest.json" in human.stdout
    rows = [{"text": f"t{i}", "label": "x"} for i in range(10)]
    del rows[4]["label"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = run_cli("data", "split", bad, "--out", tmp_path / "out3", "--stratify", "label")
    assert result.returncode == 2 and f"{bad}:5: field 'label': missing" in result.stderr
    assert "Traceback" not in result.stderr
