"""Task metrics over predicted strings and their references, computed by the libraries the field reports with.

Every score comes from a maintained implementation, so a number printed here is the number a paper or a
Hugging Face tutorial would print for the same strings: scikit-learn (accuracy, precision, recall, F1),
sacrebleu (corpus BLEU and chrF), rouge-score (ROUGE-1/2/L). Only exact match, perplexity and token accuracy
are written here, because each is one line of arithmetic no library owns.

Scales follow those libraries: accuracy, precision, recall, F1 and exact match are fractions (0-1, as
scikit-learn and HF ``evaluate`` give them); BLEU, chrF and ROUGE are points (0-100, as sacrebleu gives them and
as the HF summarisation tutorials print ROUGE).

Every example may have several references (DialogSum's test set has three): BLEU and chrF match against all of
them (sacrebleu's reference streams), ROUGE keeps the best-scoring reference per example (rouge-score's
``score_multi``), exact match counts a hit on any reference. Classification metrics need one label per example.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lmtune.errors import LmtuneError

References = Sequence[str | Sequence[str]]
Scores = dict[str, Any]  # metric key -> float, or "<key>_per_class" -> {label: float}

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
LABEL_METRICS = ("accuracy", "f1", "precision", "recall")
TEXT_METRICS = ("rouge", "bleu", "chrf", "exact_match")
# Keys reported in points (0-100); every other key is a fraction (0-1).
POINTS = frozenset({"bleu", "chrf", *ROUGE_TYPES})
# Metrics that need the model's token log-probabilities, not strings: see perplexity() and mean_token_accuracy().
MODEL_METRICS = ("perplexity", "token_accuracy")
# A default of label metrics needs short references drawn from a small set (see default_metrics).
LABEL_MAX_WORDS = 3
LABEL_MAX_DISTINCT = 50


# ----------------------------------------------------------------------------------------------- input checks


def check_inputs(predictions: Sequence[str], references: References) -> list[tuple[str, ...]]:
    """References as one tuple per example (a plain string is one reference), after checking the shapes match."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise LmtuneError("predictions and references must be lists (one entry per example), not a single string")
    if len(predictions) == 0:
        raise LmtuneError("no predictions to score", hint="give at least one prediction with its reference(s)")
    if len(predictions) != len(references):
        raise LmtuneError(
            f"{len(predictions)} predictions but {len(references)} references",
            hint="give one entry of references (a string or a list of strings) per prediction",
        )
    out = []
    for i, (pred, refs) in enumerate(zip(predictions, references, strict=True), start=1):
        if not isinstance(pred, str):
            raise LmtuneError(f"prediction of example {i} is {type(pred).__name__}, expected a string")
        refs = (refs,) if isinstance(refs, str) else tuple(refs)
        if not refs:
            raise LmtuneError(f"example {i} has no references", hint="give at least one reference per example")
        if not all(isinstance(r, str) for r in refs):
            raise LmtuneError(f"references of example {i} must be strings, got {[type(r).__name__ for r in refs]}")
        out.append(refs)
    return out


def _labels(predictions: Sequence[str], references: References) -> tuple[np.ndarray, np.ndarray]:
    """(gold labels, predicted labels): one reference per example, surrounding whitespace dropped (a generated
    label usually ends with a newline or a space the gold label does not have)."""
    refs = check_inputs(predictions, references)
    several = next((i for i, r in enumerate(refs, start=1) if len(r) != 1), None)
    if several is not None:
        raise LmtuneError(
            f"classification metrics need exactly one reference label per example; example {several} has "
            f"{len(refs[several - 1])}",
            hint="give one 'label' (or 'reference') per example, or use text metrics (rouge, bleu, chrf, exact_match)",
        )
    gold = np.array([r[0].strip() for r in refs], dtype=object)
    pred = np.array([p.strip() for p in predictions], dtype=object)
    return gold, pred


# ----------------------------------------------------------------------------------------- the metrics


def accuracy(predictions: Sequence[str], references: References) -> Scores:
    """Share of examples whose predicted label equals the reference label (scikit-learn's accuracy_score)."""
    from sklearn.metrics import accuracy_score

    gold, pred = _labels(predictions, references)
    return {"accuracy": float(accuracy_score(gold, pred))}


def _prf(name: str, predictions: Sequence[str], references: References) -> Scores:
    """Macro average (every label weighs the same, however rare) and per-label values, zero_division=0.

    The labels are those of scikit-learn's default: every label seen in the references or the predictions, so a
    label the model invents counts as a class it gets wrong.
    """
    from sklearn.metrics import precision_recall_fscore_support

    gold, pred = _labels(predictions, references)
    labels = sorted({*gold, *pred})
    index = ("precision", "recall", "f1").index(name)
    macro = precision_recall_fscore_support(gold, pred, labels=labels, average="macro", zero_division=0)[index]
    per_class = precision_recall_fscore_support(gold, pred, labels=labels, average=None, zero_division=0)[index]
    return {name: float(macro), f"{name}_per_class": {lab: float(v) for lab, v in zip(labels, per_class, strict=True)}}


def precision(predictions: Sequence[str], references: References) -> Scores:
    """Macro-averaged precision, plus ``precision_per_class``."""
    return _prf("precision", predictions, references)


def recall(predictions: Sequence[str], references: References) -> Scores:
    """Macro-averaged recall, plus ``recall_per_class``."""
    return _prf("recall", predictions, references)


def f1(predictions: Sequence[str], references: References) -> Scores:
    """Macro-averaged F1, plus ``f1_per_class``."""
    return _prf("f1", predictions, references)


def reference_streams(references: Sequence[tuple[str, ...]]) -> list[list[str | None]]:
    """sacrebleu's reference layout: stream j holds every example's j-th reference.

    Examples with fewer references than the longest are padded with None, which sacrebleu drops per example
    (``Metric._cache_references``), so each example is matched against exactly its own references. An empty
    string would not do: sacrebleu keeps it as a (zero-length) reference.
    """
    width = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


def sacrebleu_metric(name: str) -> Any:
    """The sacrebleu metric object with its default settings (BLEU: 13a tokenizer, exp smoothing; chrF: n=6,
    beta=2), the same as ``sacrebleu.corpus_bleu`` / ``corpus_chrf`` use."""
    from sacrebleu.metrics import BLEU, CHRF

    return {"bleu": BLEU, "chrf": CHRF}[name]()


def bleu(predictions: Sequence[str], references: References) -> Scores:
    """Corpus BLEU (sacrebleu), matching every example against all of its references."""
    refs = check_inputs(predictions, references)
    return {"bleu": float(sacrebleu_metric("bleu").corpus_score(list(predictions), reference_streams(refs)).score)}


def chrf(predictions: Sequence[str], references: References) -> Scores:
    """Corpus chrF (sacrebleu), with the best-matching reference per example."""
    refs = check_inputs(predictions, references)
    return {"chrf": float(sacrebleu_metric("chrf").corpus_score(list(predictions), reference_streams(refs)).score)}


def _rouge_per_example(predictions: Sequence[str], references: References) -> dict[str, np.ndarray]:
    """ROUGE-1/2/L F-measure ×100 of every example against its best reference (rouge-score's ``score_multi``,
    Porter stemming on, as in the HF summarisation tutorials)."""
    from rouge_score.rouge_scorer import RougeScorer

    refs = check_inputs(predictions, references)
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rows = [scorer.score_multi(list(r), p) for p, r in zip(predictions, refs, strict=True)]
    return {key: np.array([row[key].fmeasure * 100 for row in rows]) for key in ROUGE_TYPES}


def rouge(predictions: Sequence[str], references: References) -> Scores:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measure over the examples, in points (×100)."""
    return {key: float(values.mean()) for key, values in _rouge_per_example(predictions, references).items()}


def normalize_answer(text: str) -> str:
    """Exact match's light normalisation: surrounding whitespace dropped, runs of whitespace made one space,
    case folded. Punctuation and articles stay (SQuAD strips them; answers here may be code or labels)."""
    return " ".join(text.split()).casefold()


def _exact_match_per_example(predictions: Sequence[str], references: References) -> np.ndarray:
    refs = check_inputs(predictions, references)
    return np.array(
        [
            float(any(normalize_answer(p) == normalize_answer(r) for r in rs))
            for p, rs in zip(predictions, refs, strict=True)
        ]
    )


def exact_match(predictions: Sequence[str], references: References) -> Scores:
    """Share of predictions equal to any of their references after ``normalize_answer``."""
    return {"exact_match": float(_exact_match_per_example(predictions, references).mean())}


METRICS: dict[str, Callable[[Sequence[str], References], Scores]] = {
    "accuracy": accuracy,
    "precision": precision,
    "recall": recall,
    "f1": f1,
    "bleu": bleu,
    "chrf": chrf,
    "rouge": rouge,
    "exact_match": exact_match,
}
# A name that asks for one key of a metric that reports several.
SUBKEYS = {key: "rouge" for key in ROUGE_TYPES}


def metric_keys(name: str) -> tuple[str, ...]:
    """The float keys a metric name reports (``rouge`` -> rouge1, rouge2, rougeL)."""
    resolve_names([name])
    return ROUGE_TYPES if name == "rouge" else (name,)


def resolve_names(names: Sequence[str] | str) -> list[str]:
    """Metric names, checked, deduplicated, in the given order (a comma-separated string is split)."""
    if isinstance(names, str):
        names = names.split(",")
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name in MODEL_METRICS:
            raise LmtuneError(
                f"{name} is computed from the model's token log-probabilities, not from predicted strings",
                hint="evaluate a run or model on data for it; score predictions with "
                + ", ".join([*METRICS, *SUBKEYS]),
            )
        if name not in METRICS and name not in SUBKEYS:
            raise LmtuneError(
                f"unknown metric '{name}'",
                hint=f"known metrics: {', '.join([*METRICS, *SUBKEYS])}",
            )
        if name not in out:
            out.append(name)
    if not out:
        raise LmtuneError("no metric names given", hint=f"known metrics: {', '.join(METRICS)}")
    return out


def compute_metrics(names: Sequence[str] | str, predictions: Sequence[str], references: References) -> Scores:
    """Every named metric of ``predictions`` against ``references`` (one string or a list of strings per example).

    Returns metric key -> float, plus ``<key>_per_class`` -> {label: float} for precision, recall and F1.
    ``rouge`` reports rouge1, rouge2 and rougeL; asking for ``rougeL`` alone reports just that key.
    """
    wanted = resolve_names(names)
    check_inputs(predictions, references)
    families: dict[str, Scores] = {}
    for name in wanted:
        family = SUBKEYS.get(name, name)
        if family not in families:
            families[family] = METRICS[family](predictions, references)
    out: Scores = {}
    for name in wanted:
        scores = families[SUBKEYS.get(name, name)]
        out.update({name: scores[name]} if name in SUBKEYS else scores)
    return out


PER_EXAMPLE = ("accuracy", "exact_match", *ROUGE_TYPES)


def per_example_arrays(family: str, predictions: Sequence[str], references: References) -> dict[str, np.ndarray]:
    """Per-example scores of a decomposable metric family (its corpus value is their mean), as numpy arrays."""
    if family == "rouge":
        return _rouge_per_example(predictions, references)
    if family == "exact_match":
        return {"exact_match": _exact_match_per_example(predictions, references)}
    if family == "accuracy":
        gold, pred = _labels(predictions, references)
        return {"accuracy": (gold == pred).astype(float)}
    raise LmtuneError(f"{family} is not an average of per-example scores", hint=f"per-example metrics: {PER_EXAMPLE}")


def per_example_scores(name: str, predictions: Sequence[str], references: References) -> list[float]:
    """One score per example for a metric whose corpus value is the mean of them: accuracy, exact_match,
    rouge1, rouge2, rougeL (BLEU, chrF and F1 are not averages of per-example values)."""
    if name == "rouge":
        raise LmtuneError("rouge has three per-example scores", hint="ask for rouge1, rouge2 or rougeL")
    if name not in PER_EXAMPLE:
        resolve_names([name])  # an unknown name gets the list of known ones
        raise LmtuneError(
            f"{name} is a corpus-level metric, not a mean of per-example scores",
            hint=f"per-example metrics: {', '.join(PER_EXAMPLE)}",
        )
    family = SUBKEYS.get(name, name)
    return [float(v) for v in per_example_arrays(family, predictions, references)[name]]


def default_metrics(predictions: Sequence[str], references: References) -> tuple[list[str], str]:
    """The metrics to use when none are named, and why.

    Label metrics (accuracy, f1, precision, recall) when the data looks like classification: every example has one
    reference, every prediction and reference is at most LABEL_MAX_WORDS words, and the references take at most
    LABEL_MAX_DISTINCT distinct values. Otherwise text metrics (rouge, bleu, chrf, exact_match).
    """
    refs = check_inputs(predictions, references)
    short = all(len(s.split()) <= LABEL_MAX_WORDS for s in [*predictions, *(r for rs in refs for r in rs)])
    single = all(len(rs) == 1 for rs in refs)
    distinct = len({rs[0].strip() for rs in refs})
    if single and short and distinct <= LABEL_MAX_DISTINCT:
        why = (
            f"references look like labels: one per example, ≤ {LABEL_MAX_WORDS} words, {distinct} distinct "
            f"(≤ {LABEL_MAX_DISTINCT})"
        )
        return list(LABEL_METRICS), why
    return list(TEXT_METRICS), "references are text"


# --------------------------------------------------------------------------- metrics from the model's outputs


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per token), from the summed token NLL (nats) and the token count.

    Summing first and dividing once gives the per-token perplexity of the whole set; averaging per-batch
    perplexities instead would weigh short batches like long ones.
    """
    if n_tokens <= 0:
        raise LmtuneError(f"perplexity needs at least one scored token, got {n_tokens}")
    try:
        return math.exp(nll_sum / n_tokens)
    except OverflowError:
        return math.inf


def mean_token_accuracy(predictions: Any, labels: Any, *, ignore_index: int = -100) -> float:
    """Share of scored tokens whose predicted id equals the label id (labels equal to ``ignore_index`` —
    prompt and padding positions — are skipped). ``predictions[i]`` must be the guess for ``labels[i]``: for a
    causal LM, shift first (the logits at position t predict the token at t + 1)."""
    pred, gold = np.asarray(predictions), np.asarray(labels)
    if pred.shape != gold.shape:
        raise LmtuneError(f"token predictions have shape {pred.shape} but labels have {gold.shape}")
    mask = gold != ignore_index
    if not mask.any():
        raise LmtuneError(f"no scored tokens: every label is the ignore index {ignore_index}")
    return float((pred[mask] == gold[mask]).mean())
