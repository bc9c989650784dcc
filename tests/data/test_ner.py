from __future__ import annotations

import random

from lmtune.data.ner import _owners, window_starts


def _owner(starts: list[int], room: int, p: int) -> int:
    """The definition, one position at a time: the window with the most context on its nearer side."""
    inside = [k for k, s in enumerate(starts) if s <= p < s + room]
    return max(inside, key=lambda k: min(p - starts[k], starts[k] + room - 1 - p))


def test_each_position_is_owned_by_the_window_whose_nearer_edge_is_furthest_first_on_a_tie():
    rng = random.Random(0)
    for _ in range(300):
        room, length = rng.randint(2, 40), rng.randint(1, 400)
        starts = window_starts(length, room)
        assert _owners(starts, room, length) == [_owner(starts, room, p) for p in range(length)], (room, length)
