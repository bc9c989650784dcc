"""The stream of training rows (lmtune/data/streaming.py): packed as `pack` packs a list, seeded, resumable at any
row, and refused where a stream cannot go."""

from __future__ import annotations

import itertools

import pytest
from support import write_jsonl

from lmtune.config import ModelConfig, load_config
from lmtune.data.batching import pack
from lmtune.data.streaming import RowStream
from lmtune.data.tokenize import tokenize_examples
from lmtune.errors import LmtuneError
from lmtune.model import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelConfig())


def stream(path, tokenizer, *, packing=True, max_length=48, overlong="truncate", buffer=16) -> RowStream:
    def tok(examples):
        return tokenize_examples(examples, tokenizer, max_length=max_length, overlong=overlong)[0]

    return RowStream(str(path), 5, buffer, max_length, packing, tok, {}, None)


def texts(n: int) -> list[dict[str, str]]:
    return [{"text": f"example {i} " + "word " * (i % 9)} for i in range(n)]


def test_packed_rows_equal_pack_of_the_same_pieces_and_resume_at_any_row(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", texts(60))
    s = stream(path, tokenizer)
    pieces = [p for p, _, _ in s.pieces(0, (0, 0))]
    assert len(pieces) == 60
    rows = list(s.rows(0))
    assert [r for r, _ in rows] == pack(pieces, 48)
    assert [r for r, _ in stream(path, tokenizer).rows(0)] == [r for r, _ in rows]  # seeded
    assert [r for r, _ in stream(path, tokenizer).rows(1)] != [r for r, _ in rows]  # a new order each epoch
    for k in (1, 4, len(rows) - 1):
        tail = [r for r, _ in stream(path, tokenizer).rows(0, rows[k - 1][1])]
        assert tail == [r for r, _ in rows[k:]], k
    assert rows[-1][1] == (60, 0)


def test_chunked_documents_resume_inside_a_document(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "long.jsonl", [{"text": "many words " * 40 + str(i)} for i in range(5)])
    s = stream(path, tokenizer, packing=False, max_length=16, overlong="chunk", buffer=2)
    rows = list(s.rows(0))
    assert len(rows) > 5 and any(after[1] > 0 for _, after in rows)  # positions inside a document
    middle = next(i for i, (_, after) in enumerate(rows) if after[1] > 0)
    tail = [
        r
        for r, _ in stream(path, tokenizer, packing=False, max_length=16, overlong="chunk", buffer=2).rows(
            0, rows[middle][1]
        )
    ]
    assert tail == [r for r, _ in rows[middle + 1 :]]


def test_a_bad_record_names_its_row(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "bad.jsonl", [*texts(3), {"text": ""}])
    with pytest.raises(LmtuneError, match=r"bad\.jsonl:4"):
        list(itertools.islice(stream(path, tokenizer, buffer=1).rows(0), 10))


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"train": {}}, "set train.max_steps"),
        ({"task": "classification", "data": {"format": "classification"}}, "reads its label set"),
        ({"data": {"replay": {}}}, "data.replay"),
    ],
)
def test_streaming_config_errors(extra, match):
    cfg = {"data": {"train": "big.jsonl", "streaming": True}, "train": {"max_steps": 5}}
    for section, values in extra.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    if extra.get("train") == {}:
        cfg["train"] = {}
    with pytest.raises(LmtuneError, match=match):
        load_config(cfg)


def test_a_streamed_config_shows_the_head_of_the_stream_to_previews(tmp_path):
    from lmtune.data.prepare import load_splits, stream_sample

    path = write_jsonl(tmp_path / "t.jsonl", texts(30))
    cfg = load_config({"data": {"train": str(path), "streaming": True}, "train": {"max_steps": 2}}).data
    splits = stream_sample(cfg, 0, n=5)
    assert [ex.line for ex in splits.train] == [1, 2, 3, 4, 5] and splits.validation == []
    assert splits.info["train"]["streaming"] is True
    assert len(load_splits(cfg, 0).train) == 30  # load_splits takes the first 1,000


def test_a_file_type_a_stream_cannot_read_is_named(tmp_path, tokenizer):
    with pytest.raises(LmtuneError, match=r"not \.txt"):
        list(stream(write_jsonl(tmp_path / "t.txt", texts(3)), tokenizer).pieces(0, (0, 0)))
