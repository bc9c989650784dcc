from __future__ import annotations

import pytest

from lmtune.data.split import carve_validation
from lmtune.errors import LmtuneError


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
