from __future__ import annotations

import hashlib
import os
import stat

import pytest

from lmtune.data.load import load_records
from lmtune.data.records_io import file_sha256, output_suffix, write_records
from lmtune.errors import LmtuneError

ROWS = [
    {"prompt": "Hello, world", "completion": 'He said "hi"\nand left.'},
    {"prompt": "Zwölf Boxkämpfer", "completion": "tab\there, comma, here"},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv"])
def test_round_trip_through_load_records_and_sha256_of_the_file(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    sha = write_records(path, ROWS)
    assert [r.data for r in load_records(str(path))] == ROWS
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)


def test_json_puts_one_record_per_line_so_load_records_reports_real_lines(tmp_path):
    path = tmp_path / "out.json"
    write_records(path, [{"i": i} for i in range(3)])
    assert [r.line for r in load_records(str(path))] == [2, 3, 4]


def test_csv_writes_non_strings_as_json_and_missing_keys_as_empty_cells(tmp_path):
    path = tmp_path / "out.csv"
    write_records(path, [{"a": 1, "b": [1, 2]}, {"a": None, "c": "x"}])
    assert path.read_text(encoding="utf-8") == 'a,b,c\n1,"[1, 2]",\n,,x\n'


def test_replaces_an_existing_file_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n", encoding="utf-8")
    path.chmod(0o640)
    write_records(path, ROWS)
    assert [r.data for r in load_records(str(path))] == ROWS
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the replaced file's mode is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_new_file_gets_the_mode_of_a_plain_open_not_the_private_temp_mode(tmp_path):
    path = tmp_path / "new.jsonl"
    write_records(path, ROWS)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_unknown_suffix_is_refused_with_the_supported_ones(tmp_path):
    with pytest.raises(LmtuneError, match=r"'\.parquet'.*") as info:
        write_records(tmp_path / "out.parquet", ROWS)
    assert ".jsonl" in str(info.value)


def test_output_suffix_keeps_writable_suffixes_and_falls_back_to_jsonl(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("a\n1\n", encoding="utf-8")
    assert output_suffix(str(csv_file)) == ".csv"
    assert output_suffix(str(tmp_path / "d.parquet")) == ".jsonl"
    assert output_suffix("gsm8k") == ".jsonl"
