"""Which tokens the loss is computed on: a token is trained when any of its characters lies in a trained span.

Spans are character ranges of the rendered text (data/tokenize.py explains why masks are made from offsets rather
than by tokenizing pieces apart). The rule is applied per piece of a long text (data/long_text.py), so the offsets
of a piece that lies wholly inside or outside every span are never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmtune.data.long_text import Piece
from lmtune.data.types import IGNORE


def merge_spans(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans sorted, with overlapping or touching ones joined."""
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def trained_labels(
    ids: Sequence[int], offsets: Sequence[tuple[int, int]] | np.ndarray, spans: Sequence[tuple[int, int]]
) -> list[int]:
    """Each token's id where any of its characters lies in a trained span (a zero-width token: where it sits inside
    one), IGNORE elsewhere. Vectorised over the tokens (a megabyte field is a million of them): the spans are merged
    into sorted, disjoint ones, so only the first span ending after a token's start can hold it."""
    merged = merge_spans(spans)
    if not merged or not len(ids):
        return [IGNORE] * len(ids)
    offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offs[:, 0], np.maximum(offs[:, 1], offs[:, 0] + 1)
    span_starts, span_ends = np.array(merged, dtype=np.int64).T
    first = np.searchsorted(span_ends, starts, side="right")  # the first span ending after the token starts
    inside = (first < len(merged)) & (span_starts[np.minimum(first, len(merged) - 1)] < ends)
    return np.where(inside, np.asarray(ids, dtype=np.int64), IGNORE).tolist()


def piece_labels(piece: Piece, merged: Sequence[tuple[int, int]]) -> list[int]:
    """``trained_labels`` of one piece of a text. A piece with no span edge in it (most pieces of a long text) is
    wholly inside a span or wholly outside all, so its tokens' offsets need not be read."""
    if not any(piece.start <= edge <= piece.end for span in merged for edge in span):
        inside = any(a < piece.start and piece.end < b for a, b in merged)
        return list(piece.ids) if inside else [IGNORE] * len(piece.ids)
    return trained_labels(piece.ids, piece.offsets, merged)


def train_trailing_space(pieces: Sequence[Piece], labels: list[int], text: str) -> None:
    """Whitespace a template writes after the last answer sits between it and the appended EOS: train it too, or
    the model never learns the step from its answer to the stop token."""
    i = len(labels)
    for piece in reversed(pieces):
        for k, (start, end) in zip(range(len(piece.ids) - 1, -1, -1), piece.offsets[::-1], strict=True):
            i -= 1
            if labels[i] != IGNORE or text[start:end].strip():
                return
            labels[i] = piece.ids[k]
