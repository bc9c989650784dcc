from __future__ import annotations

import random

from lmtune.data.labels import trained_labels
from lmtune.data.types import IGNORE


def test_trained_labels_equal_the_per_token_rule_on_random_layouts() -> None:
    """The vectorised mask (data.tokenize.trained_labels) against its definition: a token is trained when any of its
    characters lies in a span (a zero-width token: when it sits inside one), spans overlapping, touching or empty."""
    rng = random.Random(0)
    for _ in range(2000):
        pos, offsets = 0, []
        for _ in range(rng.randint(0, 30)):
            start = pos if rng.random() < 0.8 else max(0, pos - 1)
            offsets.append((start, start + rng.choice([0, 1, 2, 3])))
            pos = offsets[-1][1]
        ids = [rng.randint(0, 100) for _ in offsets]
        spans = [(a, a + rng.randint(0, 5)) for a in (rng.randint(0, pos + 2) for _ in range(rng.randint(0, 4)))]
        rule = [
            t if any(s < b and a < max(e, s + 1) for a, b in spans) else IGNORE
            for t, (s, e) in zip(ids, offsets, strict=True)
        ]
        assert trained_labels(ids, offsets, spans) == rule, (offsets, spans)
