from __future__ import annotations

import pytest
import torch

from lmtune.data.batching import Row, collate, epoch_batches, pack, padded_width, unpacked
from lmtune.data.types import IGNORE, Tokenized


def example(n: int, start: int = 10, masked: int = 0) -> Tokenized:
    """n tokens start, start+1, ...; the first `masked` of them are not trained."""
    ids = list(range(start, start + n))
    return Tokenized(ids, [IGNORE] * masked + ids[masked:])


@pytest.fixture
def examples() -> list[Tokenized]:
    return [example(n, start=100 * i, masked=i % 3) for i, n in enumerate([5, 3, 7, 2, 6, 4, 1, 8])]


# --- packing -------------------------------------------------------------------------------------


def test_pack_keeps_every_token_in_order_within_max_length(examples):
    rows = pack(examples, max_length=10)
    assert [t for r in rows for t in r.input_ids] == [t for e in examples for t in e.input_ids]
    assert all(len(r.input_ids) <= 10 for r in rows)
    assert all(len(r.input_ids) == len(r.labels) == len(r.position_ids) for r in rows)
    assert len(rows) < len(examples)  # it does pack
    # greedy: a row is only closed when the next example does not fit (lengths 5 3 | 7 2 | 6 4 | 1 8)
    assert [len(r.input_ids) for r in rows] == [8, 9, 10, 9]


def test_pack_restarts_positions_and_masks_each_examples_first_label(examples):
    rows = pack(examples, max_length=10)
    positions = [p for r in rows for p in r.position_ids]
    labels = [x for r in rows for x in r.labels]
    offset = 0
    for e in examples:
        n = len(e.input_ids)
        assert positions[offset : offset + n] == list(range(n))
        assert labels[offset] == IGNORE  # never predicted from the previous example's last token
        assert labels[offset + 1 : offset + n] == e.labels[1:]
        offset += n
    assert offset == len(positions)


def test_pack_row_trained_tokens_match_the_examples(examples):
    rows = pack(examples, max_length=10)
    per_example = sum(sum(x != IGNORE for x in e.labels[1:]) for e in examples)
    assert sum(r.trained_tokens for r in rows) == per_example


def test_pack_with_room_for_everything_makes_one_row(examples):
    rows = pack(examples, max_length=1000)
    assert len(rows) == 1
    assert pack([], max_length=10) == []


def test_unpacked_rows_are_the_examples(examples):
    rows = unpacked(examples)
    assert [(r.input_ids, r.labels, r.position_ids) for r in rows] == [(e.input_ids, e.labels, None) for e in examples]


# --- batch order ---------------------------------------------------------------------------------


def test_epoch_batches_cover_every_index_once():
    batches = epoch_batches(10, 3, seed=1, epoch=0)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(10))


def test_epoch_batches_are_seeded_and_change_every_epoch():
    first = epoch_batches(50, 4, seed=7, epoch=0)
    assert first == epoch_batches(50, 4, seed=7, epoch=0)
    assert first != epoch_batches(50, 4, seed=7, epoch=1)
    assert first != epoch_batches(50, 4, seed=8, epoch=0)
    assert [i for b in first for i in b] != list(range(50))  # shuffled
    for epoch in range(3):
        assert sorted(i for b in epoch_batches(50, 4, seed=7, epoch=epoch) for i in b) == list(range(50))


def test_epoch_batches_without_shuffle_keep_the_order():
    assert epoch_batches(5, 2, seed=0, epoch=3, shuffle=False) == [[0, 1], [2, 3], [4]]
    assert epoch_batches(0, 2, seed=0, epoch=0) == []


# --- collation -----------------------------------------------------------------------------------


def test_collate_unpacked_pads_and_builds_the_attention_mask():
    rows = [Row([5, 6, 7], [IGNORE, 6, 7]), Row([8], [8])]
    batch = collate(rows, pad_id=0)
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_rounds_the_width_up_to_a_multiple_but_not_past_the_cap():
    rows = [Row([5, 6, 7], [IGNORE, 6, 7]), Row([8], [8])]
    batch = collate(rows, pad_id=0, multiple=4)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE], [8, IGNORE, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert padded_width(3, 64, cap=10) == 10  # never past the data's longest row ...
    assert padded_width(12, 8, cap=12) == 12
    assert padded_width(12, 8) == 16 and padded_width(16, 8, cap=20) == 16 and padded_width(5, 1, cap=9) == 5
    # auto: a quarter of the octave, at least 8: at most a quarter longer (7 positions below 32).
    assert [padded_width(n, "auto") for n in (5, 20, 100, 210, 256, 257, 400)] == [8, 24, 112, 224, 256, 320, 448]
    assert all(padded_width(n, "auto") <= n + max(7, n // 4) for n in range(1, 5000))
    assert padded_width(400, "auto", cap=420) == 420


def test_collate_pads_packed_rows_with_their_own_segment(examples):
    rows = pack(examples, 64)
    batch = collate(rows[:1], pad_id=0, multiple=8, cap=64)
    n = len(rows[0].input_ids)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 or width == 64
    assert batch["position_ids"][0, n:].tolist() == list(range(width - n))  # padding: positions from 0, untrained
    assert (batch["labels"][0, n:] == IGNORE).all()


def test_collate_uses_the_given_pad_id():
    batch = collate([Row([5, 6], [5, 6]), Row([8], [8])], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6], [8, 2]]


def test_collate_packed_gives_position_ids_and_no_mask(examples):
    rows = pack(examples, max_length=10)
    batch = collate(rows, pad_id=0)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].shape == (len(rows), 10)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        assert batch["input_ids"][i].tolist() == r.input_ids + [0] * (10 - n)
        assert batch["labels"][i].tolist() == r.labels + [IGNORE] * (10 - n)
        # padding continues as its own segment starting at 0, so nothing real attends to it
        assert batch["position_ids"][i].tolist() == r.position_ids + list(range(10 - n))
