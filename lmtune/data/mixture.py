"""Mixtures of sources (`data.train` as a list): how many examples each source gives, and which.

Every choice is a seeded draw keyed by the run's seed and the source's name, so the same config and data give the
same mixture in every process and on every resume (the loop then resumes at its exact batch position). The
sampling itself is a few lines of `random`: `datasets.interleave_datasets` samples an example stream by
probabilities, but a run in memory needs a fixed set whose per-source counts are known before training (they go
into data.json and the report) and whose size does not depend on which source runs out first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lmtune.data.formats import Example

T = TypeVar("T")


@dataclass
class Part:
    """One source of a mixture, as loaded: its training examples (after sizing and mixing) and validation."""

    name: str
    train: list[Example]
    validation: list[Example]
    format: str
    template: str  # the source's data.template (auto, chat, raw)
    info: dict[str, Any] = field(default_factory=dict)


def source_rng(seed: int, name: str, purpose: str) -> random.Random:
    """A generator for one source and one purpose: seeding with a string is stable across processes (no hash
    randomisation), and a source's draws do not change when another source is added or reordered."""
    return random.Random(f"{seed}:{name}:{purpose}")


def take_part(items: Sequence[T], *, fraction: float | None, max_examples: int | None, rng: random.Random) -> list[T]:
    """A source's fixed part: the first `max_examples` (as data.max_examples takes them), then a seeded sample of
    `fraction` of them (kept in file order)."""
    kept = list(items[:max_examples] if max_examples is not None else items)
    if fraction is None or fraction >= 1.0:
        return kept
    n = max(1, round(fraction * len(kept)))
    return [kept[i] for i in sorted(rng.sample(range(len(kept)), n))]


def weighted_counts(weights: Sequence[float], total: int) -> list[int]:
    """Examples per source for `total` examples in proportion to `weights`, rounded by largest remainder (they sum
    to `total` exactly); every source with a weight gives at least one."""
    share = [w / sum(weights) * total for w in weights]
    counts = [max(1, int(s)) for s in share]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(share[i] - int(share[i])), i))
    for i in by_remainder[: max(0, total - sum(counts))]:
        counts[i] += 1
    return counts


def draw(items: Sequence[T], n: int, rng: random.Random) -> list[T]:
    """`n` items: a seeded sample without replacement while the source lasts (fewer than it holds: a down-sample),
    then whole passes again, each in a fresh seeded order (more: an up-sample, every item used as evenly as can be)."""
    picked: list[T] = []
    while len(picked) < n:
        order = list(items)
        rng.shuffle(order)
        picked.extend(order[: n - len(picked)])
    return picked


def mix(parts: list[Part], weights: Sequence[float] | None, total: int | None, seed: int) -> list[dict[str, Any]]:
    """Size the training examples of each part in place (by weight when given) and return what each gives."""
    sizes = [len(p.train) for p in parts]
    if weights is None:
        return [{"examples": n} for n in sizes]
    counts = weighted_counts(weights, total if total is not None else sum(sizes))
    out = []
    for part, n, w in zip(parts, counts, weights, strict=True):
        available = len(part.train)
        part.train = draw(part.train, n, source_rng(seed, part.name, "weight"))
        out.append({"weight": w / sum(weights), "available": available, "examples": n, "passes": n / available})
    return out
