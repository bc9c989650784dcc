"""Metrics equal the reference libraries called directly on the same strings, including several references."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer
from sklearn import metrics as skm

from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import (
    METRICS,
    compute_metrics,
    default_metrics,
    mean_token_accuracy,
    normalize_answer,
    per_example_scores,
    perplexity,
)

DIALOGSUM = Path(__file__).resolve().parents[3] / "shared" / "data" / "dialogsum" / "dialogsum.test.jsonl"

PREDS = [
    "The cat sat on the mat while the dog slept.",
    "Officials said the bridge will reopen on Monday.",
    "She bought three apples and a loaf of bread.",
    "",
]
REFS = [
    "A cat was sitting on the mat and the dog was sleeping.",
    "The bridge reopens Monday, officials announced.",
    "She purchased three apples and some bread.",
    "Nothing happened.",
]
SCORER = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def dialogsum(n: int = 20) -> list[dict]:
    if not DIALOGSUM.is_file():
        pytest.skip(f"{DIALOGSUM} not present")
    with DIALOGSUM.open(encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


def streams(refs: list[list[str]]) -> list[list[str]]:
    return [list(s) for s in zip(*refs, strict=True)]


def library_rouge(preds: list[str], refs: list[list[str]]) -> dict[str, float]:
    rows = [SCORER.score_multi(r, p) for p, r in zip(preds, refs, strict=True)]
    return {k: 100 * float(np.mean([row[k].fmeasure for row in rows])) for k in ("rouge1", "rouge2", "rougeL")}


def assert_text_metrics_match(preds: list[str], refs: list[list[str]]) -> dict:
    got = compute_metrics(["rouge", "bleu", "chrf"], preds, refs)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, streams(refs)).score, abs=1e-9)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, streams(refs)).score, abs=1e-9)
    for key, value in library_rouge(preds, refs).items():
        assert got[key] == pytest.approx(value, abs=1e-9)
    return got


def test_single_reference_text_metrics_equal_the_libraries():
    got = compute_metrics("rouge,bleu,chrf", PREDS, REFS)  # plain strings: one reference each
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-9)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score, abs=1e-9)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * np.mean([SCORER.score(r, p)[key].fmeasure for p, r in zip(PREDS, REFS, strict=True)])
        assert got[key] == pytest.approx(expected, abs=1e-9)
    assert 0 < got["rouge2"] < got["rouge1"] < 100 and 0 < got["bleu"] < 100


def test_dialogsum_three_references_with_one_of_them_as_the_prediction():
    recs = dialogsum()
    refs = [[r["summary1"], r["summary2"], r["summary3"]] for r in recs]
    preds = [r["summary2"] for r in recs]
    got = assert_text_metrics_match(preds, refs)
    # The prediction is one of the references: ROUGE takes the best reference, BLEU/chrF match it in full.
    assert got["rougeL"] == pytest.approx(100) and got["bleu"] == pytest.approx(100)
    assert compute_metrics(["exact_match"], preds, refs) == {"exact_match": 1.0}


def test_dialogsum_other_references_give_the_library_values():
    recs = dialogsum()
    refs = [[r["summary1"], r["summary3"]] for r in recs]
    got = assert_text_metrics_match([r["summary2"] for r in recs], refs)
    assert 20 < got["rougeL"] < 90
    shifted = [recs[(i + 1) % len(recs)]["summary2"] for i in range(len(recs))]  # a wrong summary per dialogue
    worse = assert_text_metrics_match(shifted, refs)
    assert worse["rougeL"] < got["rougeL"] and worse["bleu"] < got["bleu"]


def test_examples_with_different_numbers_of_references():
    preds = ["the cat sat on the mat", "a dog barked loudly at night", "rain tomorrow"]
    refs = [
        ["a cat sat on a mat", "the cat was on the mat", "there is a cat"],
        ["the dog barked at night", "a dog barked in the night"],
        ["it will rain tomorrow"],  # short hypothesis: an empty-string pad would be its "closest" reference length
    ]
    got = compute_metrics(["bleu", "chrf", "rouge"], preds, refs)
    # sacrebleu drops None references per example, so padding equals repeating an example's own reference
    # (a repeated reference changes neither the clipped n-gram counts nor the closest reference length).
    padded = [[r[j] if j < len(r) else None for r in refs] for j in range(3)]
    repeated = [[r[j] if j < len(r) else r[0] for r in refs] for j in range(3)]
    for name, fn in (("bleu", sacrebleu.corpus_bleu), ("chrf", sacrebleu.corpus_chrf)):
        assert got[name] == pytest.approx(fn(preds, padded).score, abs=1e-9)
        assert got[name] == pytest.approx(fn(preds, repeated).score, abs=1e-9)
    assert got["rougeL"] == pytest.approx(library_rouge(preds, refs)["rougeL"], abs=1e-9)


def test_classification_metrics_equal_scikit_learn_with_per_class_values():
    gold = ["pos", "neg", "neu", "pos", "neg", "pos", "neu", "neg"]
    pred = ["pos", "neg", "pos", "neg", "neg", "pos", "maybe", "neu\n"]  # an invented label, a trailing newline
    got = compute_metrics(["accuracy", "precision", "recall", "f1"], pred, gold)
    clean = [p.strip() for p in pred]
    labels = sorted({*gold, *clean})
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(gold, clean))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        assert got[name] == pytest.approx(fn(gold, clean, average="macro", zero_division=0))
        per_class = fn(gold, clean, labels=labels, average=None, zero_division=0)
        assert got[f"{name}_per_class"] == pytest.approx(dict(zip(labels, per_class, strict=True)))
    assert got["f1_per_class"]["maybe"] == 0.0 and got["recall_per_class"]["pos"] == pytest.approx(2 / 3)


def test_classification_needs_one_reference_per_example():
    with pytest.raises(LmtuneError, match="example 2 has 2"):
        compute_metrics(["f1"], ["a", "b"], [["a"], ["b", "c"]])


def test_exact_match_normalises_lightly_and_any_reference_counts():
    assert normalize_answer("  New \t York\n") == "new york"
    preds = ["  Paris\n", "new   YORK", "Paris.", "Rome", "Straße"]
    refs = [["paris"], ["New York"], ["Paris"], ["Milan", " rome "], ["STRASSE"]]
    assert per_example_scores("exact_match", preds, refs) == [1.0, 1.0, 0.0, 1.0, 1.0]  # casefold: ß == ss
    assert compute_metrics(["exact_match"], preds, refs) == {"exact_match": 0.8}


def test_per_example_scores_average_to_the_corpus_value():
    for name in ("rouge1", "rouge2", "rougeL"):
        values = per_example_scores(name, PREDS, REFS)
        assert len(values) == len(PREDS)
        assert np.mean(values) == pytest.approx(compute_metrics([name], PREDS, REFS)[name])
    labels = ["a", "b", "a", "c"]
    assert per_example_scores("accuracy", ["a", "b", "b", " c "], labels) == [1.0, 1.0, 0.0, 1.0]
    with pytest.raises(LmtuneError, match="corpus-level"):
        per_example_scores("bleu", PREDS, REFS)
    with pytest.raises(LmtuneError, match="rouge1, rouge2 or rougeL"):
        per_example_scores("rouge", PREDS, REFS)


def test_one_rouge_key_can_be_asked_for_alone():
    assert list(compute_metrics(["rougeL", "rougeL"], PREDS, REFS)) == ["rougeL"]
    assert list(compute_metrics("rouge,bleu", PREDS, REFS)) == ["rouge1", "rouge2", "rougeL", "bleu"]


def test_bad_requests_are_clear_errors():
    with pytest.raises(LmtuneError, match=r"unknown metric 'blue'") as e:
        compute_metrics(["blue"], PREDS, REFS)
    assert all(name in str(e.value) for name in METRICS)
    with pytest.raises(LmtuneError, match="no predictions"):
        compute_metrics(["bleu"], [], [])
    with pytest.raises(LmtuneError, match="4 predictions but 3 references"):
        compute_metrics(["bleu"], PREDS, REFS[:3])
    with pytest.raises(LmtuneError, match="example 2 has no references"):
        compute_metrics(["bleu"], ["a", "b"], [["a"], []])
    with pytest.raises(LmtuneError, match="log-probabilities"):
        compute_metrics(["perplexity"], PREDS, REFS)


def test_default_metrics_pick_label_metrics_only_for_short_label_sets():
    assert default_metrics(["pos", "neg "], ["pos", "neg"])[0] == ["accuracy", "f1", "precision", "recall"]
    assert default_metrics(PREDS, REFS)[0] == ["rouge", "bleu", "chrf", "exact_match"]
    assert default_metrics(["a", "b"], [["a", "x"], ["b"]])[0][0] == "rouge"  # several references: text
    many = [f"label{i}" for i in range(51)]
    assert default_metrics(many, many)[0][0] == "rouge"


def test_perplexity_is_exp_of_the_mean_token_nll():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(12, 50, generator=gen), torch.randint(0, 50, (12,), generator=gen)
    nll_sum = torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
    mean_ce = torch.nn.functional.cross_entropy(logits, targets).item()
    assert perplexity(nll_sum, 12) == pytest.approx(math.exp(mean_ce), rel=1e-6)
    assert perplexity(2 * math.log(5), 2) == pytest.approx(5.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(LmtuneError, match="at least one scored token"):
        perplexity(1.0, 0)


def test_mean_token_accuracy_skips_the_ignore_index():
    labels = np.array([[-100, -100, 5, 6, 7], [-100, 3, 4, -100, -100]])
    preds = np.array([[9, 9, 5, 0, 7], [3, 3, 0, 0, 0]])
    assert mean_token_accuracy(preds, labels) == pytest.approx(3 / 5)
    assert mean_token_accuracy(preds.tolist(), labels.tolist(), ignore_index=-1) == pytest.approx(3 / 10)
    with pytest.raises(LmtuneError, match="no scored tokens"):
        mean_token_accuracy([1, 2], [-100, -100])
    with pytest.raises(LmtuneError, match="shape"):
        mean_token_accuracy([1, 2, 3], [1, 2])
