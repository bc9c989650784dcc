"""Packing, batch order and collation of tokenized examples into model inputs.

Packed rows carry `position_ids` that restart at 0 for every example and no attention mask: transformers then
builds a block-diagonal causal mask from the position resets (masking_utils.find_packed_sequence_indices), so
no example attends to another and the loss equals the unpacked one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmtune.data.types import IGNORE, Tokenized

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Row:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None  # set for packed rows
    decoder_labels: list[int] | None = None  # encoder-decoder rows: the decoder's targets (not shifted)
    class_label: int | None = None  # classification rows: the label index (one prediction per row)

    @property
    def trained_tokens(self) -> int:
        if self.class_label is not None:
            return 1
        if self.decoder_labels is not None:
            return sum(label != IGNORE for label in self.decoder_labels)
        return sum(label != IGNORE for label in self.labels[1:])

    @property
    def length(self) -> int:
        """The row's width before padding (what length grouping sorts by and padding pads to)."""
        return len(self.input_ids)


def unpacked(examples: Sequence[Tokenized]) -> list[Row]:
    return [Row(e.input_ids, e.labels, decoder_labels=e.decoder_labels, class_label=e.class_label) for e in examples]


def pack(examples: Sequence[Tokenized], max_length: int) -> list[Row]:
    """Greedy, order-keeping packing into rows of at most max_length tokens."""
    rows: list[Row] = []
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []

    def flush() -> None:
        if ids:
            rows.append(Row(list(ids), list(labels), list(pos)))
            ids.clear(), labels.clear(), pos.clear()

    if any(ex.decoder_labels is not None for ex in examples):
        raise ValueError("encoder-decoder examples are not packed")  # the config refuses packing for seq2seq
    for ex in examples:
        if len(ids) + len(ex.input_ids) > max_length:
            flush()
        ids.extend(ex.input_ids)
        # The first token of an example would be "predicted" from the previous example's last one.
        labels.extend([IGNORE, *ex.labels[1:]])
        pos.extend(range(len(ex.input_ids)))
    flush()
    return rows


# Length grouping sorts this many batches' worth of rows at a time: batches of near-equal lengths (little padding)
# while which rows meet in a batch still changes from epoch to epoch (HF Trainer's group_by_length uses 50).
GROUP_BATCHES = 64


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    lengths: Sequence[int] | None = None,
) -> list[list[int]]:
    """Row indices of each micro-batch of an epoch: a seeded shuffle, so a resumed run sees the same order.

    With `lengths` (train.batching: length_grouped) the shuffled rows are sorted by length within windows of
    GROUP_BATCHES batches and cut into batches, whose order is then shuffled: a batch pads to its longest row, so
    rows of similar length together waste almost no compute on padding. The batch with the longest row goes first,
    so a batch that does not fit in memory fails at the first step, not hours in.
    """
    order = list(range(n))
    rng = random.Random(seed * 1_000_003 + epoch)
    if shuffle:
        rng.shuffle(order)
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    window = batch_size * GROUP_BATCHES
    batches: list[list[int]] = []
    for start in range(0, n, window):
        part = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    if shuffle:
        rng.shuffle(batches)
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
    return batches


def padded_width(longest: int, multiple: int | str = 1, cap: int | None = None) -> int:
    """The length a batch whose longest row is `longest` pads to: up to a multiple of `multiple`, but not past
    `cap` (the longest row of the data, so a model never sees more positions than the data already gives it).

    `multiple="auto"`: a quarter of the largest power of two not above `longest`, at least 8 (20 -> 24, 100 -> 112,
    210 -> 224, 400 -> 448): as few distinct lengths per octave as a fixed 64 gives long batches, at most a quarter
    (typically a tenth) more positions, and short batches are barely padded."""
    if multiple == "auto":
        multiple = max(8, (1 << (longest.bit_length() - 1)) // 4)
    assert isinstance(multiple, int)
    width = -(-longest // multiple) * multiple
    return width if cap is None else max(longest, min(width, cap))


def collate(
    rows: Sequence[Row], pad_id: int, multiple: int | str = 1, cap: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad a batch (to its longest row, rounded up as `padded_width` says). Unpacked rows get an attention
    mask; packed rows get position ids instead.

    Encoder-decoder rows carry the decoder's targets as `labels`, padded to their own width (the model builds its
    decoder inputs from them, shifted right). Classification rows carry one label index each: `labels` is (batch,).
    """
    import torch  # here, not at the top: the data commands batch nothing and should not wait for torch

    width = padded_width(max(len(r.input_ids) for r in rows), multiple, cap)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    packed = rows[0].position_ids is not None
    extra = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        input_ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        if packed:
            extra[i, :n] = torch.tensor(r.position_ids)
            extra[i, n:] = torch.arange(width - n)  # padding forms its own (unattended-to) segment
        else:
            extra[i, :n] = 1
    key = "position_ids" if packed else "attention_mask"
    if rows[0].class_label is not None:
        labels = torch.tensor([r.class_label for r in rows], dtype=torch.long)
    if rows[0].decoder_labels is not None:
        targets = [r.decoder_labels or [] for r in rows]
        labels = torch.full((len(rows), max(map(len, targets))), IGNORE, dtype=torch.long)
        for i, t in enumerate(targets):
            labels[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels, key: extra}
