"""Score any system's outputs from a file: read the predictions, compute the metrics, compare with a baseline.

A predictions file (JSONL, JSON array, CSV/TSV; read by ``load_records`` so every problem names file:line:field)
holds one record per example::

    {"prediction": "...", "references": ["...", "..."]}     # several references (DialogSum has three)
    {"prediction": "...", "reference": "..."}               # one reference
    {"prediction": "positive", "label": "positive"}         # classification
    optional: "id" (pairs a baseline file with this one), "input" (kept for reports)

In CSV, ``references`` is a JSON array in one cell (``"[""a"", ""b""]"``), or use a ``reference`` column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.data.load import load_records
from lmtune.data.types import Record, json_type
from lmtune.errors import DataError, LmtuneError
from lmtune.evaluate.bootstrap import Delta, headline, paired_bootstraps, verdict
from lmtune.evaluate.metrics import compute_metrics, default_metrics, resolve_names

REFERENCE_FIELDS = ("references", "reference", "label")
_SHAPE_HINT = 'write {"prediction": "...", "references": ["...", ...]} (or "reference": "...", or "label": "...")'


@dataclass(frozen=True)
class PredictionRecord:
    """One scored example: what the system said, what it should have said, and where it was read from."""

    prediction: str
    references: tuple[str, ...]
    source: str
    line: int
    id: str | None = None
    input: str | None = None


def read_predictions(path: str | Path) -> list[PredictionRecord]:
    """Every record of a predictions file, checked; the first bad one raises a DataError naming file:line:field."""
    source = str(path)
    if not Path(source).expanduser().is_file():
        raise LmtuneError(f"predictions file not found: {source}", hint="give a .jsonl, .json or .csv file")
    return [_parse(record) for record in load_records(source)]


def _text(record: Record, name: str, value: Any, *, numbers: bool = False) -> str:
    """A string field; a JSON number is accepted where labels may be numbers (class ids)."""
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    expected = "a string or an integer" if numbers else "a string"
    raise DataError(record.source, record.line, name, f"expected {expected}, got {json_type(value)}", hint=_SHAPE_HINT)


def _parse(record: Record) -> PredictionRecord:
    data = record.data
    if "prediction" not in data:
        raise DataError(record.source, record.line, "prediction", "missing", hint=_SHAPE_HINT)
    prediction = _text(record, "prediction", data["prediction"], numbers=True)
    given = [name for name in REFERENCE_FIELDS if name in data]
    if len(given) != 1:
        problem = "missing" if not given else f"give one of {', '.join(given)}, not several"
        raise DataError(record.source, record.line, "references", problem, hint=_SHAPE_HINT)
    name = given[0]
    value = data[name]
    if name == "references":
        refs = _reference_list(record, value)
    else:
        refs = (_text(record, name, value, numbers=name == "label"),)
    for i, ref in enumerate(refs):
        if not ref.strip():
            where = f"{name}[{i}]" if name == "references" else name
            raise DataError(record.source, record.line, where, "is empty", hint="every reference needs some text")
    ident = data.get("id")
    if ident is not None and not isinstance(ident, str | int):
        raise DataError(record.source, record.line, "id", f"expected a string or a number, got {json_type(ident)}")
    text = data.get("input")
    if text is not None and not isinstance(text, str):
        raise DataError(record.source, record.line, "input", f"expected a string, got {json_type(text)}")
    return PredictionRecord(prediction, refs, record.source, record.line, None if ident is None else str(ident), text)


def _reference_list(record: Record, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:  # a CSV cell holding a JSON array
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(record.source, record.line, "references", f"not a valid JSON array: {e.msg}") from None
    if not isinstance(value, list):
        raise DataError(
            record.source,
            record.line,
            "references",
            f"expected a list of strings, got {json_type(value)}",
            hint='write "references": ["..."], or "reference": "..." for a single one',
        )
    if not value:
        raise DataError(
            record.source, record.line, "references", "is an empty list", hint="give at least one reference"
        )
    for i, ref in enumerate(value):
        if not isinstance(ref, str):
            raise DataError(record.source, record.line, f"references[{i}]", f"expected a string, got {json_type(ref)}")
    return tuple(value)


def align(system: Sequence[PredictionRecord], baseline: Sequence[PredictionRecord]) -> list[PredictionRecord]:
    """The baseline's records in the system's order, so both are scored on the same examples.

    When every record of both files has an ``id``, records are matched by id; otherwise by position, and the
    references must then agree line by line (a shuffled or shortened baseline file would compare apples with pears).
    """
    if all(r.id is not None for r in [*system, *baseline]):
        by_id: dict[str, PredictionRecord] = {}
        for r in baseline:
            if r.id in by_id:
                raise DataError(r.source, r.line, "id", f"'{r.id}' also on line {by_id[r.id].line}")
            by_id[str(r.id)] = r
        missing = next((r for r in system if r.id not in by_id), None)
        if missing is not None:
            raise DataError(
                missing.source, missing.line, "id", f"'{missing.id}' has no prediction in {baseline[0].source}"
            )
        if len(by_id) != len(system):
            extra = next(r for r in baseline if r.id not in {s.id for s in system})
            raise DataError(extra.source, extra.line, "id", f"'{extra.id}' is not in {system[0].source}")
        ordered = [by_id[str(r.id)] for r in system]
    else:
        if len(system) != len(baseline):
            raise LmtuneError(
                f"{system[0].source} has {len(system)} records but {baseline[0].source} has {len(baseline)}",
                hint="score both systems on the same examples (give every record an 'id' to match them by id)",
            )
        ordered = list(baseline)
    for s, b in zip(system, ordered, strict=True):
        if s.references != b.references:
            raise DataError(
                b.source,
                b.line,
                "references",
                f"differ from those of {s.source}:{s.line}",
                hint="both files must hold the same examples in the same order (or match them by 'id')",
            )
    return ordered


@dataclass(frozen=True)
class Comparison:
    """System vs baseline on every metric key, from one paired bootstrap."""

    baseline: str
    deltas: dict[str, Delta]
    headline: str
    verdict: str
    n_resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "deltas": {k: d.to_dict() for k, d in self.deltas.items()},
            "headline": self.headline,
            "verdict": self.verdict,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class PredictionsReport:
    """The scores of one predictions file (and its comparison with a baseline's, when given)."""

    source: str
    count: int
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    chosen: str = "given"  # why these metrics: "given", or the default rule that picked them
    comparison: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": self.metrics, "count": self.count, "predictions": self.source}
        out["metrics_chosen"] = self.chosen
        if self.per_class:
            out["per_class"] = self.per_class
        if self.comparison is not None:
            out["comparison"] = self.comparison.to_dict()
        return out


def score_predictions(
    path: str | Path,
    *,
    metrics: Sequence[str] | str | None = None,
    baseline: str | Path | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PredictionsReport:
    """Score a predictions file; with ``baseline``, also the paired-bootstrap difference system minus baseline.

    ``metrics=None`` picks them with ``default_metrics`` (label metrics for label-like references, else text ones).
    """
    records = read_predictions(path)
    predictions = [r.prediction for r in records]
    references = [r.references for r in records]
    if metrics is None:
        names, chosen = default_metrics(predictions, references)
    else:
        names, chosen = resolve_names(metrics), "given"
    scores = compute_metrics(names, predictions, references)
    values = {k: v for k, v in scores.items() if not isinstance(v, dict)}
    per_class = {k.removesuffix("_per_class"): v for k, v in scores.items() if isinstance(v, dict)}
    comparison = None
    if baseline is not None:
        base = align(records, read_predictions(baseline))
        deltas = paired_bootstraps(
            names,
            [r.prediction for r in base],
            predictions,
            references,
            n_resamples=n_resamples,
            seed=seed,
            confidence=confidence,
        )
        key = headline(list(deltas))
        comparison = Comparison(str(baseline), deltas, key, verdict(deltas[key]), n_resamples, seed)
    return PredictionsReport(str(path), len(records), values, per_class, chosen, comparison)
