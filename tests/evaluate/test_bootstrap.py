"""Paired bootstrap: deterministic, recomputes each metric as its library would, and tells real gains from noise."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lmtune.errors import LmtuneError
from lmtune.evaluate import bootstrap
from lmtune.evaluate.bootstrap import bootstrap_ci, bootstrap_cis, paired_bootstrap, paired_bootstraps, verdict
from lmtune.evaluate.metrics import check_inputs, compute_metrics

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "tree", "quickly", "slowly", "big"]
WORDS += ["small", "red", "blue", "house", "garden"]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 12)))) for _ in range(n)]


def damage(texts: list[str], share: float, seed: int) -> list[str]:
    """Replace a share of each text's words at random: more damage, lower scores."""
    rng = np.random.default_rng(seed)
    return [" ".join(w if rng.random() > share else str(rng.choice(WORDS)) for w in t.split()) for t in texts]


REFS = corpus(60)
GOOD = damage(REFS, 0.2, 1)
BAD = damage(REFS, 0.7, 2)


def test_same_seed_same_interval_other_seed_other_interval():
    a = paired_bootstraps("rouge,bleu", BAD, GOOD, REFS, n_resamples=200, seed=3)
    assert a == paired_bootstraps("rouge,bleu", BAD, GOOD, REFS, n_resamples=200, seed=3)
    b = paired_bootstraps("rouge,bleu", BAD, GOOD, REFS, n_resamples=200, seed=4)
    assert a["rougeL"].delta == b["rougeL"].delta and a["rougeL"].low != b["rougeL"].low


@pytest.mark.parametrize("metric", ["rougeL", "bleu", "chrf", "exact_match"])
def test_single_system_interval_contains_the_library_value(metric):
    ci = bootstrap_ci(metric, GOOD, REFS, n_resamples=300)
    assert ci.value == pytest.approx(compute_metrics([metric], GOOD, REFS)[metric], abs=1e-9)
    assert ci.low <= ci.value <= ci.high
    if metric != "exact_match":  # no exact hits at all: a zero-width interval at 0
        assert ci.low < ci.high


def test_a_clearly_better_system_gets_an_interval_above_zero():
    deltas = paired_bootstraps("rouge,bleu,chrf", BAD, GOOD, REFS, n_resamples=500)
    for key, d in deltas.items():
        assert d.value_a == pytest.approx(compute_metrics([key], BAD, REFS)[key], abs=1e-9)
        assert d.value_b == pytest.approx(compute_metrics([key], GOOD, REFS)[key], abs=1e-9)
        assert d.delta == pytest.approx(d.value_b - d.value_a)
        assert 0 < d.low <= d.delta <= d.high, key
        assert d.significant and d.p_value < 0.01
    line = verdict(deltas["rougeL"])
    assert line.startswith(f"system beats baseline by +{deltas['rougeL'].delta:.2f} rougeL [95% CI +")
    reverse = paired_bootstrap("rougeL", GOOD, BAD, REFS, n_resamples=200)
    assert reverse.high < 0 and verdict(reverse).startswith("baseline beats system by +")


def test_identical_systems_give_an_interval_around_zero():
    d = paired_bootstrap("rougeL", GOOD, list(GOOD), REFS, n_resamples=200)
    assert (d.delta, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not d.significant and verdict(d).startswith("no significant difference in rougeL")
    # Two systems of the same quality, different errors: the interval straddles zero.
    twin = damage(REFS, 0.2, 7)
    d = paired_bootstrap("rougeL", GOOD, twin, REFS, n_resamples=500)
    assert d.low < 0 < d.high and d.p_value > 0.05 and not d.significant


def test_label_metrics_resample_through_scikit_learn():
    rng = np.random.default_rng(0)
    gold = list(rng.choice(["pos", "neg", "neu"], 80))
    weak = list(rng.choice(["pos", "neg", "neu"], 80))
    strong = [g if rng.random() < 0.85 else w for g, w in zip(gold, weak, strict=True)]
    deltas = paired_bootstraps("accuracy,f1", weak, strong, gold, n_resamples=100)
    assert list(deltas) == ["accuracy", "f1"]
    assert deltas["f1"].value_b == pytest.approx(compute_metrics(["f1"], strong, gold)["f1"])
    assert all(d.low > 0 for d in deltas.values())
    cis = bootstrap_cis(["precision", "recall"], strong, gold, n_resamples=100)
    assert all(ci.low <= ci.value <= ci.high for ci in cis.values())


@pytest.mark.parametrize("key", ["bleu", "chrf", "rougeL", "f1", "exact_match"])
def test_resampled_values_equal_the_library_on_the_resampled_examples(key):
    """The fast paths (summed sacrebleu statistics, weighted means) give what scoring the drawn strings gives."""
    # Labels: a rare invented label ("maybe") is missing from some draws, which changes the macro average's classes.
    labels = [*(["pos", "neg", "neg", "neu"] * 5)[:-1], "maybe"], ["pos", "neg", "neu", "neu"] * 5
    preds, refs = labels if key == "f1" else (GOOD, REFS)
    family = bootstrap._family(bootstrap._family_of(key), preds, check_inputs(preds, refs))
    idx, counts = bootstrap._draw(len(preds), 8, seed=5)
    if key == "f1":
        assert any("maybe" not in [preds[i] for i in row] for row in idx)
    drawn = family.resample(idx, counts)[key]
    for row, value in zip(idx, drawn, strict=True):
        expected = compute_metrics([key], [preds[i] for i in row], [refs[i] for i in row])[key]
        assert value == pytest.approx(expected, abs=1e-9)


def test_resampling_is_fast_for_rouge():
    refs, a, b = corpus(500, 11), corpus(500, 12), corpus(500, 13)
    scored = [bootstrap._family("rouge", p, check_inputs(p, refs)) for p in (a, b)]
    start = time.perf_counter()
    idx, counts = bootstrap._draw(500, 1000, seed=0)
    for family in scored:
        family.resample(idx, counts)
    assert time.perf_counter() - start < 2.0


def test_bad_options_are_clear_errors():
    with pytest.raises(LmtuneError, match="n_resamples"):
        paired_bootstrap("bleu", BAD, GOOD, REFS, n_resamples=0)
    with pytest.raises(LmtuneError, match="confidence"):
        bootstrap_ci("bleu", GOOD, REFS, confidence=95)
    with pytest.raises(LmtuneError, match="rouge1, rouge2, rougeL"):
        paired_bootstrap("rouge", BAD, GOOD, REFS)
    with pytest.raises(LmtuneError, match="3 predictions but 60 references"):
        paired_bootstrap("bleu", BAD, GOOD[:3], REFS)
