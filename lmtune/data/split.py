"""Carve a validation set out of the training examples when the user has no separate one."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from lmtune.errors import LmtuneError

T = TypeVar("T")


def carve_validation(examples: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Split ``examples`` into (train, validation) by a seeded shuffle; both keep the original order.

    The same seed always picks the same validation members, so reruns and resumed runs evaluate on the
    same data. Keeping the original order inside each part leaves shuffling to the data loader.
    """
    n = len(examples)
    if not 0 < fraction < 1:
        raise LmtuneError(
            f"validation fraction must be between 0 and 1 (exclusive), got {fraction}",
            hint="use e.g. 0.1 for 10% of the training examples",
        )
    if n < 2:
        raise LmtuneError(
            f"cannot carve a validation set out of {n} example{'s' if n != 1 else ''}: at least 2 are needed",
            hint="add training data, or give a separate validation file",
        )
    # At least one validation example, and at least one left for training (round(0.9 * 2) would take both).
    size = min(max(1, round(fraction * n)), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    chosen = set(order[:size])
    train = [example for index, example in enumerate(examples) if index not in chosen]
    validation = [example for index, example in enumerate(examples) if index in chosen]
    return train, validation
