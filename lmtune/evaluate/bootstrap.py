"""Bootstrap confidence intervals for one system's metric and for the difference between two systems.

Paired bootstrap (Koehn 2004, as in sacrebleu's ``--paired-bs``): draw the example indices with replacement, score
both systems on the same draw, and read the interval off the percentiles of the resampled differences. The metric
is recomputed on every draw the way its library defines it, only faster than calling the library on resampled
strings:

* ROUGE, exact match, accuracy are means of per-example scores: a draw's value is a weighted mean
  (counts @ scores / n), one matrix product for all draws.
* BLEU and chrF are functions of summed n-gram statistics: sacrebleu's own per-example statistics are summed per
  draw (counts @ stats) and turned into a score by sacrebleu, exactly as its significance module does.
* Macro precision/recall/F1 are not sums of anything per example: scikit-learn recomputes them on each draw
  (about 1 ms a draw).

Written here rather than taken from sacrebleu (whose paired test covers only its own metrics and reads its seed
from the environment) or scipy.stats.bootstrap (no p-value, and its BCa interval is NaN when two systems agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import (
    POINTS,
    SUBKEYS,
    References,
    check_inputs,
    compute_metrics,
    metric_keys,
    per_example_arrays,
    reference_streams,
    resolve_names,
    sacrebleu_metric,
)


@dataclass(frozen=True)
class Interval:
    """A metric's value on the whole set and its bootstrap percentile interval."""

    metric: str
    value: float
    low: float
    high: float
    confidence: float
    n_resamples: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class Delta:
    """System B minus system A on one metric, with the paired-bootstrap interval of the difference.

    ``p_value``: the share of resampled differences, shifted to mean zero (the null hypothesis of no difference),
    at least as far from zero as the observed one, with +1 smoothing (sacrebleu's paired bootstrap, two-sided).
    """

    metric: str
    value_a: float
    value_b: float
    delta: float
    low: float
    high: float
    p_value: float
    confidence: float
    n_resamples: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero: B is better (low > 0) or worse (high < 0) than A at this confidence."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | int | str | bool]:
        return {**asdict(self), "significant": self.significant}


@dataclass(frozen=True)
class _Family:
    """A metric family scored once on the whole set, and how to score it on a batch of resamples."""

    values: dict[str, float]
    resample: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]  # (idx, counts), each R×n -> key -> (R,)


def _family(family: str, predictions: Sequence[str], refs: list[tuple[str, ...]]) -> _Family:
    n = len(predictions)
    if family in ("rouge", "exact_match", "accuracy"):
        scores = per_example_arrays(family, predictions, refs)
        return _Family(
            {k: float(v.mean()) for k, v in scores.items()},
            lambda idx, counts: {k: counts @ v / n for k, v in scores.items()},
        )
    if family in ("bleu", "chrf"):
        metric = sacrebleu_metric(family)
        # The statistics corpus_score sums before scoring; sacrebleu's significance tests resample them the same way.
        stats = np.asarray(metric._extract_corpus_statistics(list(predictions), reference_streams(refs)), dtype=float)
        return _Family(
            {family: float(metric._compute_score_from_stats(stats.sum(0)).score)},
            lambda idx, counts: {family: np.array([metric._compute_score_from_stats(s).score for s in counts @ stats])},
        )
    from sklearn.metrics import precision_recall_fscore_support

    values = compute_metrics(["precision", "recall", "f1"], predictions, refs)
    # Integer codes for the labels: scikit-learn finds the labels of each draw twice as fast as with strings.
    labels = [r[0].strip() for r in refs] + [p.strip() for p in predictions]
    codes = np.unique(np.array(labels, dtype=object), return_inverse=True)[1]
    gold, pred = codes[: len(refs)], codes[len(refs) :]

    def resample(idx: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.array(
            [precision_recall_fscore_support(gold[i], pred[i], average="macro", zero_division=0)[:3] for i in idx],
            dtype=float,
        )
        return {"precision": rows[:, 0], "recall": rows[:, 1], "f1": rows[:, 2]}

    return _Family({k: float(values[k]) for k in ("precision", "recall", "f1")}, resample)


def _keys(names: Sequence[str] | str) -> list[str]:
    """The float keys the names report, in order (``rouge`` -> rouge1, rouge2, rougeL)."""
    keys: list[str] = []
    for name in resolve_names(names):
        keys += [k for k in metric_keys(name) if k not in keys]
    return keys


def _family_of(key: str) -> str:
    return SUBKEYS.get(key) or ("prf" if key in ("precision", "recall", "f1") else key)


def _draw(n: int, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """R rows of n indices drawn with replacement, and how often each example occurs in each row."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    counts = np.bincount((idx + n * np.arange(n_resamples)[:, None]).ravel(), minlength=n * n_resamples)
    return idx, counts.reshape(n_resamples, n).astype(float)


def _check_options(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise LmtuneError(f"n_resamples must be at least 1, got {n_resamples}", hint="1000 is the usual choice")
    if not 0 < confidence < 1:
        raise LmtuneError(f"confidence must be between 0 and 1, got {confidence}", hint="0.95 for a 95% interval")


def _score_all(
    keys: list[str], predictions: Sequence[str], refs: list[tuple[str, ...]], idx: np.ndarray, counts: np.ndarray
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Whole-set value and resampled values of every key, scoring each metric family once."""
    values: dict[str, float] = {}
    resampled: dict[str, np.ndarray] = {}
    for family in dict.fromkeys(_family_of(k) for k in keys):
        scored = _family(family, predictions, refs)
        draws = scored.resample(idx, counts)
        for key in keys:
            if key in scored.values:
                values[key], resampled[key] = scored.values[key], draws[key]
    return values, resampled


def _bounds(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_cis(
    metrics: Sequence[str] | str,
    predictions: Sequence[str],
    references: References,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Interval]:
    """Bootstrap percentile intervals of every key the metric names report (one draw shared by all)."""
    _check_options(n_resamples, confidence)
    keys = _keys(metrics)
    refs = check_inputs(predictions, references)
    idx, counts = _draw(len(predictions), n_resamples, seed)
    values, resampled = _score_all(keys, predictions, refs, idx, counts)
    return {k: Interval(k, values[k], *_bounds(resampled[k], confidence), confidence, n_resamples) for k in keys}


def bootstrap_ci(
    metric: str,
    predictions: Sequence[str],
    references: References,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """The bootstrap percentile interval of one metric key (e.g. ``rougeL``, ``bleu``, ``f1``) of one system."""
    return bootstrap_cis(
        [_single(metric)], predictions, references, n_resamples=n_resamples, seed=seed, confidence=confidence
    )[metric]


def paired_bootstraps(
    metrics: Sequence[str] | str,
    preds_a: Sequence[str],
    preds_b: Sequence[str],
    references: References,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Delta]:
    """B minus A on every key the metric names report, all from the same resampled example sets."""
    _check_options(n_resamples, confidence)
    keys = _keys(metrics)
    refs = check_inputs(preds_a, references)
    check_inputs(preds_b, references)
    idx, counts = _draw(len(refs), n_resamples, seed)
    values_a, draws_a = _score_all(keys, preds_a, refs, idx, counts)
    values_b, draws_b = _score_all(keys, preds_b, refs, idx, counts)
    out = {}
    for key in keys:
        delta = values_b[key] - values_a[key]
        diffs = draws_b[key] - draws_a[key]
        # Differences below float noise are no difference (identical systems must give p = 1, not chance ties).
        tol = 1e-9 * (100 if key in POINTS else 1)
        extreme = np.abs(diffs - diffs.mean()) >= abs(delta) - tol
        p_value = float((extreme.sum() + 1) / (n_resamples + 1))
        low, high = _bounds(diffs, confidence)
        out[key] = Delta(key, values_a[key], values_b[key], delta, low, high, p_value, confidence, n_resamples)
    return out


def paired_bootstrap(
    metric: str,
    preds_a: Sequence[str],
    preds_b: Sequence[str],
    references: References,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Delta:
    """How much system B's ``metric`` (one key: rougeL, bleu, chrf, f1, accuracy, exact_match, ...) exceeds system
    A's on the same examples, with a paired-bootstrap interval. Deterministic for a given seed."""
    return paired_bootstraps(
        [_single(metric)], preds_a, preds_b, references, n_resamples=n_resamples, seed=seed, confidence=confidence
    )[metric]


def _single(metric: str) -> str:
    keys = metric_keys(metric)
    if len(keys) != 1:
        raise LmtuneError(f"{metric} reports {', '.join(keys)}", hint=f"name one of them: {', '.join(keys)}")
    return metric


def verdict(delta: Delta, *, a: str = "baseline", b: str = "system") -> str:
    """One line for a person: who won on this metric and by how much, or that the difference is within noise."""
    digits = 2 if delta.metric in POINTS else 4
    ci = f"[{delta.confidence:.0%} CI {delta.low:+.{digits}f}..{delta.high:+.{digits}f}]"
    if delta.low > 0:
        return f"{b} beats {a} by {delta.delta:+.{digits}f} {delta.metric} {ci}"
    if delta.high < 0:
        return f"{a} beats {b} by {-delta.delta:+.{digits}f} {delta.metric} {ci}"
    return f"no significant difference in {delta.metric}: {b} {delta.delta:+.{digits}f} vs {a} {ci}"


def headline(keys: Sequence[str]) -> str:
    """The metric a verdict is about: ROUGE-L for text, macro F1 for labels, else the first one."""
    for preferred in ("rougeL", "f1"):
        if preferred in keys:
            return preferred
    return keys[0]
