from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmtune.data.load import load_records
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return str(path)


def lines(records: list[Record]) -> list[int]:
    return [record.line for record in records]


# --- formats and line numbers -------------------------------------------------------------------


def test_jsonl_skips_blank_lines_but_counts_them(tmp_path):
    src = write(tmp_path, "d.jsonl", '{"text": "a"}\n\n  \n{"text": "b"}\r\n{"text": "c"}\n')
    records = load_records(src)
    assert [r.data["text"] for r in records] == ["a", "b", "c"]
    assert lines(records) == [1, 4, 5]
    assert all(r.source == src for r in records)


def test_json_array_records_the_line_each_element_starts_on(tmp_path):
    content = (
        "[\n"
        '  {"text": "one ] with [ brackets, and } braces"},\n'  # line 2
        "  {\n"  # line 3
        '    "text": "two",\n'
        '    "nested": {"list": [1, 2, {"x": "\\n"}]}\n'
        "  }\n"
        "  ,\n"
        '\n  {"text": "three"}, {"text": "four"}\n'  # both on line 9
        "]\n"
    )
    records = load_records(write(tmp_path, "d.json", content))
    assert [r.data["text"] for r in records] == ["one ] with [ brackets, and } braces", "two", "three", "four"]
    assert lines(records) == [2, 3, 9, 9]
    assert records[1].data["nested"] == {"list": [1, 2, {"x": "\n"}]}


def test_json_file_holding_jsonl_is_accepted(tmp_path):
    records = load_records(write(tmp_path, "d.json", '{"text": "a"}\n\n{"text": "b"}\n'))
    assert [r.data["text"] for r in records] == ["a", "b"]
    assert lines(records) == [1, 3]


def test_csv_rows_keep_their_file_line_across_a_quoted_multiline_cell(tmp_path):
    content = 'prompt,completion\r\nhi,there\r\n"line one\nline two\nline three",done\r\n\r\nlast,""\r\nx,\r\n'
    records = load_records(write(tmp_path, "d.csv", content))
    assert [r.data for r in records] == [
        {"prompt": "hi", "completion": "there"},
        {"prompt": "line one\nline two\nline three", "completion": "done"},
        {"prompt": "last", "completion": ""},
        {"prompt": "x", "completion": ""},
    ]
    assert lines(records) == [2, 3, 7, 8]


def test_tsv_uses_tabs_and_a_bom_does_not_leak_into_the_header(tmp_path):
    content = "\ufeffsentence\tlabel\nit's good, really\t1\n\t0\n"
    records = load_records(write(tmp_path, "d.tsv", content))
    assert [r.data for r in records] == [
        {"sentence": "it's good, really", "label": "1"},
        {"sentence": "", "label": "0"},
    ]
    assert lines(records) == [2, 3]


def test_parquet_rows_are_numbered_from_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "completion": ["c1", "c2"]}), path)
    records = load_records(str(path))
    assert [r.data for r in records] == [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
    assert lines(records) == [1, 2]


def test_saved_dataset_dict_picks_the_split_and_lists_the_others(tmp_path):
    import datasets

    train = datasets.Dataset.from_dict({"text": ["a", "b", "c"]})
    valid = datasets.Dataset.from_dict({"text": ["v"]})
    datasets.DatasetDict({"train": train, "validation": valid}).save_to_disk(str(tmp_path / "dd"))
    records = load_records(str(tmp_path / "dd"))
    assert [r.data["text"] for r in records] == ["a", "b", "c"] and lines(records) == [1, 2, 3]
    assert [r.data["text"] for r in load_records(str(tmp_path / "dd"), split="validation")] == ["v"]
    with pytest.raises(LmtuneError, match=r"split 'test' not found .*available splits: train, validation"):
        load_records(str(tmp_path / "dd"), split="test")


def test_saved_single_dataset_is_the_train_split_only(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(tmp_path / "ds"))
    assert [r.data["text"] for r in load_records(str(tmp_path / "ds"))] == ["a", "b"]
    with pytest.raises(LmtuneError, match="single dataset without splits"):
        load_records(str(tmp_path / "ds"), split="validation")


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(LmtuneError, match="not a dataset saved with datasets' save_to_disk"):
        load_records(str(tmp_path))


def test_hub_name_goes_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, subset, split):
        calls.append((name, subset, split))
        return datasets.Dataset.from_dict({"text": ["x", "y"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records = load_records("someone/some-data", split="test", subset="main")
    assert calls == [("someone/some-data", "main", "test")]
    assert [(r.data["text"], r.source, r.line) for r in records] == [
        ("x", "someone/some-data", 1),
        ("y", "someone/some-data", 2),
    ]


def test_hub_failure_gives_the_reason_in_one_line_and_a_hint(monkeypatch):
    import datasets

    def failing(name, subset, split):
        raise ConnectionError("Couldn't reach the hub\nsecond line of a long traceback-ish message")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(LmtuneError) as caught:
        load_records("nobody/no-such-dataset-xyz")
    message = str(caught.value)
    assert "could not load dataset 'nobody/no-such-dataset-xyz'" in message
    assert "ConnectionError: Couldn't reach the hub" in message and "second line" not in message
    assert "check the dataset name" in caught.value.hint and "local file" in caught.value.hint


@pytest.mark.skipif(not (SHARED_DATA / "instruct").is_dir(), reason="shared data not present")
def test_real_pretty_printed_json_array():
    records = load_records(str(SHARED_DATA / "instruct" / "code_alpaca_2k.json"))
    assert len(records) == 2017
    assert lines(records)[:3] == [2, 7, 12]  # each element is a 5-line object after the opening '['


# --- errors: file, line, a helpful message; never a json/csv traceback -----------------------------


def test_missing_file_names_the_path(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(LmtuneError, match=re.escape(f"data file not found: {missing}")):
        load_records(missing)


def test_missing_path_without_a_data_suffix_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(LmtuneError, match="data file not found"):
        load_records(str(tmp_path / "some" / "dir"))


def test_unsupported_extension(tmp_path):
    with pytest.raises(LmtuneError, match=r"unsupported data file type '\.txt'") as caught:
        load_records(write(tmp_path, "d.txt", "hello\n"))
    assert ".jsonl" in caught.value.hint


@pytest.mark.parametrize(
    ("name", "content"),
    [("e.jsonl", ""), ("e.jsonl", "\n \n"), ("e.json", "[]"), ("e.json", "  \n"), ("e.csv", "a,b\n"), ("e.csv", "")],
)
def test_empty_file_has_no_records(tmp_path, name, content):
    with pytest.raises(DataError, match="no records found"):
        load_records(write(tmp_path, name, content))


def test_invalid_json_line_reports_line_column_and_hint(tmp_path):
    src = write(tmp_path, "d.jsonl", '{"text": "ok"}\n\n{"text": "broken}\n')
    with pytest.raises(DataError) as caught:
        load_records(src)
    error = caught.value
    assert (error.source, error.line) == (src, 3)
    assert str(error).startswith(f"{src}:3: invalid JSON: Unterminated string")
    assert "(column 10)" in str(error)
    assert "each line must be one JSON object" in error.hint


def test_jsonl_line_that_is_not_an_object(tmp_path):
    src = write(tmp_path, "d.jsonl", '{"text": "ok"}\n["a", "list"]\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: expected a JSON object, got an array"):
        load_records(src)


def test_json_array_with_a_non_object_element_names_its_line(tmp_path):
    src = write(tmp_path, "d.json", '[\n  {"text": "a"},\n  {"text": "b"},\n  "just a string"\n]\n')
    with pytest.raises(DataError, match=r"d\.json:4: array element 2 is a string, expected an object"):
        load_records(src)


def test_invalid_json_inside_an_array_names_its_line(tmp_path):
    src = write(tmp_path, "d.json", '[\n  {"text": "a"},\n  {"text": "b",}\n]\n')
    with pytest.raises(DataError, match=r"d\.json:3: invalid JSON: Expecting property name"):
        load_records(src)


def test_missing_comma_between_array_elements(tmp_path):
    src = write(tmp_path, "d.json", '[\n  {"text": "a"}\n  {"text": "b"}\n]\n')
    with pytest.raises(DataError, match=r"d\.json:3: invalid JSON: expected ',' or ']'"):
        load_records(src)


def test_json_single_object_points_at_the_list_inside(tmp_path):
    src = write(tmp_path, "d.json", json.dumps({"version": 1, "data": [{"text": "a"}]}, indent=2))
    with pytest.raises(DataError, match="holds one JSON object") as caught:
        load_records(src)
    assert "'data'" in caught.value.hint


def test_non_utf8_bytes_name_the_line(tmp_path):
    src = write(tmp_path, "d.jsonl", b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid UTF-8 \(byte 0xe9\)") as caught:
        load_records(src)
    assert "UTF-8" in caught.value.hint


def test_csv_row_with_more_fields_than_the_header(tmp_path):
    src = write(tmp_path, "d.csv", 'prompt,completion\n"a\nb",c\nx,y,z\n')
    with pytest.raises(DataError, match=r"d\.csv:4: row has 3 fields, more than the 2 columns") as caught:
        load_records(src)
    assert "quote cells" in caught.value.hint


def test_csv_unclosed_quote_is_an_error_not_a_merged_row(tmp_path):
    src = write(tmp_path, "d.csv", 'prompt,completion\nok,fine\n"never closed,c\nx,y\n')
    with pytest.raises(DataError, match=r"d\.csv:3: malformed CSV row"):
        load_records(src)


def test_csv_duplicate_header_names(tmp_path):
    with pytest.raises(DataError, match=r"d\.csv:1: duplicate column names in the header: \['a'\]"):
        load_records(write(tmp_path, "d.csv", "a,b,a\n1,2,3\n"))
