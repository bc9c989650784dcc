"""Malformed JSON that Python's json module accepts or crashes on (issue 14): each is a DataError naming the file,
the line and, where there is one, the field."""

from __future__ import annotations

import pytest

from lmtune.data.load import load_records
from lmtune.errors import DataError

DEEP = "[" * 10_000 + "]" * 10_000


@pytest.mark.parametrize(
    "name, text, line, field, needle",
    [
        ("surrogate.jsonl", '{"text": "ok"}\n{"text": "cut \\ud83d here"}\n', 2, "text", "lone UTF-16 surrogate"),
        (
            "nested.jsonl",
            '{"messages": [{"role": "user", "content": "\\udc00"}]}\n',
            1,
            "messages[0].content",
            "surrogate",
        ),
        (
            "nan.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b", "label": NaN}\n',
            2,
            "label",
            "NaN is not a JSON number",
        ),
        ("inf.jsonl", '{"text": "a", "weight": -Infinity}\n', 1, "weight", "-Infinity is not a JSON number"),
        ("deep.jsonl", '{"text": "a"}\n{"text": ' + DEEP + "}\n", 2, None, "nested too deeply"),
        ("deep.json", '[{"text": "a"},\n {"text": ' + DEEP + "}]\n", 2, None, "nested too deeply"),
        ("nan.json", '[{"text": "a"},\n {"text": "b", "label": NaN}]\n', 2, "label", "NaN is not a JSON number"),
        ("one.json", '{"text": "a single object"}\n', 1, None, "holds one JSON object"),
    ],
)
def test_bad_json_names_file_line_and_field(tmp_path, name, text, line, field, needle):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_records(str(path))
    error = caught.value
    assert (error.source, error.line, error.field) == (str(path), line, field)
    assert needle in error.problem and error.hint


def test_data_check_reads_on_past_a_bad_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a"}\n{"text": NaN}\n{"text": ' + DEEP + '}\n{"text": "d"}\n', encoding="utf-8")
    skipped: list[DataError] = []
    records = load_records(str(path), skipped=skipped)
    assert [r.line for r in records] == [1, 4]
    assert [(e.line, e.field) for e in skipped] == [(2, "text"), (3, None)]


def test_a_json_array_and_jsonl_under_a_json_name_still_load(tmp_path):
    (tmp_path / "a.json").write_text('[{"text": "a"}, {"text": "b"}]', encoding="utf-8")
    (tmp_path / "b.json").write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    assert len(load_records(str(tmp_path / "a.json"))) == len(load_records(str(tmp_path / "b.json"))) == 2
