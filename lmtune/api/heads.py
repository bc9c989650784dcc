"""`lmtune eval` of runs that predict with a trained head (classification; tagging builds on it in
`lmtune.api.tagging`): the result type every evaluation returns, and the run's evaluation examples."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.config import RunConfig
from lmtune.data.formats import Example, LabelExample, normalize
from lmtune.data.load import load_records
from lmtune.data.ner import special_counts, window_starts
from lmtune.data.prepare import load_splits
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import compute_metrics
from lmtune.export import load_tuned
from lmtune.fileio import atomic_write_json

EVAL_FILE = "eval.json"


SAMPLES = 8


@dataclass
class EvalResult:
    run_dir: str
    data: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    comparison: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    forgetting: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "data": self.data,
            "metrics": self.metrics,
            "comparison": self.comparison,
            "verdict": self.verdict,
            "samples": self.samples,
            "seconds": round(self.seconds, 2),
            **({"forgetting": self.forgetting} if self.forgetting is not None else {}),
        }


def evaluate_classifier(
    run_dir: Path,
    data: str | None,
    metrics: Sequence[str],
    limit: int | None,
    batch_size: int,
    save: bool,
    start: float,
) -> EvalResult:
    """A classification run: the label of each example predicted by argmax over the head's logits (no generation),
    scored by the label metrics (default accuracy and macro F1) on the label names as strings."""
    model, tokenizer, cfg = load_tuned(run_dir)
    examples, _, source = run_examples(cfg, data)
    examples = examples[:limit] if limit is not None else examples
    names = list(metrics) or ["accuracy", "f1"]
    predictions, long = predict_labels(model, tokenizer, cfg, examples, batch_size)
    refs = [(ex.label,) for ex in examples if isinstance(ex, LabelExample)]
    scores = {"tuned": compute_metrics(names, predictions, refs)}
    samples = [
        {"input": ex.text, "reference": [ex.label], "outputs": {"tuned": pred}}
        for ex, pred in zip(examples[:SAMPLES], predictions, strict=False)
        if isinstance(ex, LabelExample)
    ]
    why = "as asked" if metrics else "classification: the label metrics"
    extra = {"longer_than_max_length": long, "cut": 0}
    return head_result(run_dir, source, len(examples), why, scores, samples, save=save, start=start, extra=extra)


def classify_whole(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int) -> tuple:
    """The head's logits for every text, and how many texts were longer than max_length. A long text is not cut:
    it is read in overlapping windows of max_length tokens (a quarter of each shared with the next) whose logits
    are averaged, so its end counts as much as its start."""
    import torch

    n_prefix, n_suffix = special_counts(tokenizer)
    rows: list[tuple[int, list[int]]] = []
    long = 0
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        long += len(ids) > max_length
        rows += [(i, part) for part in id_windows(ids, max_length, n_prefix, n_suffix)]
    sums, counts = None, torch.zeros(len(texts))
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(ids) for _, ids in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for row, (_, ids) in enumerate(chunk):
                input_ids[row, : len(ids)], mask[row, : len(ids)] = torch.tensor(ids), 1
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            if sums is None:
                sums = torch.zeros(len(texts), logits.shape[-1])
            for (i, _), row_logits in zip(chunk, logits, strict=True):
                sums[i] += row_logits
                counts[i] += 1
    assert sums is not None
    return sums / counts.clamp(min=1).unsqueeze(-1), long


def id_windows(ids: Sequence[int], max_length: int, n_prefix: int, n_suffix: int) -> list[list[int]]:
    """Token ids as windows of at most max_length, each with the special tokens around it, overlapping by a
    quarter of a window (the ids themselves when they fit)."""
    if len(ids) <= max_length:
        return [list(ids)]
    head, body, tail = ids[:n_prefix], ids[n_prefix : len(ids) - n_suffix], ids[len(ids) - n_suffix :]
    room = max(1, max_length - n_prefix - n_suffix)
    return [[*head, *body[s : s + room], *tail] for s in window_starts(len(body), room)]


def predict_labels(
    model: Any, tokenizer: Any, cfg: RunConfig, examples: Sequence[Example], batch_size: int
) -> tuple[list[str], int]:
    """The label name the classifier predicts for each labelled example (argmax over the head's logits, a long text
    read whole in windows: `classify_whole`), and how many texts were longer than data.max_length."""
    id2label = model.config.id2label
    texts = [ex.text for ex in examples if isinstance(ex, LabelExample)]
    logits, long = classify_whole(model, tokenizer, texts, cfg.data.max_length, batch_size)
    return [id2label[int(j)] for j in logits.argmax(-1)], long


def refuse_unknown_metrics(metrics: Sequence[str], known: Sequence[str], run: str, hint: str) -> None:
    """A run that is not scored by generating has a fixed set of metrics: name the ones asked that it lacks."""
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise LmtuneError(f"metrics {', '.join(unknown)}: a {run} run is scored by {', '.join(known)}", hint=hint)


def head_result(
    run_dir: Path,
    source: str,
    n: int,
    why: str,
    scores: dict[str, Any],
    samples: list[dict[str, Any]],
    *,
    save: bool,
    start: float,
    extra: dict[str, Any] | None = None,
) -> EvalResult:
    """The result of a run that predicts with a trained head (one reference per example), saved as eval.json;
    `extra` adds to its data description (e.g. how many inputs were longer than max_length, and how many cut)."""
    result = EvalResult(
        str(run_dir),
        {"source": source, "examples": n, "references_per_example": 1, "metrics": why, **(extra or {})},
        scores,
        samples=samples,
        seconds=time.perf_counter() - start,
    )
    if save:
        atomic_write_json(run_dir / EVAL_FILE, result.as_dict())
    return result


def run_examples(
    cfg: RunConfig, data: str | None, columns: dict[str, str] | None = None
) -> tuple[list[Example], list[Any] | None, str]:
    """`data` read in the run's shape (its column mapping, or `columns`, and its template), or the run's own
    validation split; with the records read (None for the split) and where the examples come from."""
    if data is None:
        examples = load_splits(cfg.data, cfg.seed).validation
        if not examples:
            raise LmtuneError("the run has no validation split to evaluate on", hint="pass --data FILE")
        return examples, None, cfg.data.validation or f"{cfg.data.train} (the run's validation carve)"
    records = load_records(data)
    columns = dict(cfg.data.columns) if columns is None else columns
    examples = normalize(records, format=cfg.data.format, columns=columns, prompt_template=cfg.data.prompt_template)
    return examples, records, data
