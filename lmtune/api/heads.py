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
    predictions = predict_labels(model, tokenizer, cfg, examples, batch_size)
    refs = [(ex.label,) for ex in examples if isinstance(ex, LabelExample)]
    scores = {"tuned": compute_metrics(names, predictions, refs)}
    samples = [
        {"input": ex.text, "reference": [ex.label], "outputs": {"tuned": pred}}
        for ex, pred in zip(examples[:SAMPLES], predictions, strict=False)
        if isinstance(ex, LabelExample)
    ]
    why = "as asked" if metrics else "classification: the label metrics"
    return head_result(run_dir, source, len(examples), why, scores, samples, save=save, start=start)


def predict_labels(
    model: Any, tokenizer: Any, cfg: RunConfig, examples: Sequence[Example], batch_size: int
) -> list[str]:
    """The label name the classifier predicts for each labelled example (argmax over the head's logits)."""
    import torch

    id2label = model.config.id2label
    predictions: list[str] = []
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            texts = [ex.text for ex in examples[i : i + batch_size] if isinstance(ex, LabelExample)]
            batch = tokenizer(texts, padding=True, truncation=True, max_length=cfg.data.max_length, return_tensors="pt")
            batch.pop("token_type_ids", None)  # one segment: all zeros, the default (and training passes none)
            logits = model(**batch).logits
            predictions += [id2label[int(j)] for j in logits.argmax(-1)]
    return predictions


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
) -> EvalResult:
    """The result of a run that predicts with a trained head (one reference per example), saved as eval.json."""
    result = EvalResult(
        str(run_dir),
        {"source": source, "examples": n, "references_per_example": 1, "metrics": why},
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
