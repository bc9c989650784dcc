"""`cross_validate`: k-fold cross-validation of a config, reported as mean ± std per metric.

The recipe: the training records → K folds (stratified by `label` when the records have one; augmented copies
always train, and the copies of a held-out fold's records are left out of its training side) → one ordinary run
per fold, with the fold as its validation file → each run's summary (and eval.json when the config evaluates)
→ mean ± standard deviation per metric in cv.json. Every fold is a complete run directory with its own report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.api.setup import Say, silent
from lmtune.api.train import finetune
from lmtune.config import ConfigLike, load_config
from lmtune.data.formats import AUGMENTATION_FIELD
from lmtune.data.load import load_records
from lmtune.data.prepare import record_key
from lmtune.data.records_io import write_records
from lmtune.data.types import Record
from lmtune.errors import LmtuneError
from lmtune.fileio import atomic_write_json
from lmtune.rundir import lock_run_dir, prepare_run_dir, read_json

CV_FILE = "cv.json"
SUMMARY_KEYS = ("val_loss_before", "best_val_loss", "val_loss_final", "val_perplexity_after")


@dataclass
class CVResult:
    run_dir: Path
    k: int
    stratified: bool
    folds: list[dict[str, Any]] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "stratified": self.stratified,
            "mean": self.mean,
            "std": self.std,
            "folds": self.folds,
        }


def cross_validate(
    config: ConfigLike,
    *,
    k: int,
    overrides: Sequence[str] = (),
    output_dir: str | None = None,
    overwrite: bool = False,
    report: Say | None = None,
) -> CVResult:
    """Train the config K times, each time holding out one fold of its training data; mean ± std per metric."""
    say = report or silent
    cfg = load_config(config, overrides, output_dir)
    if k < 2:
        raise LmtuneError(f"--cv needs at least 2 folds, got {k}")
    if cfg.data.mixture or cfg.data.streaming:
        raise LmtuneError(
            "--cv holds out folds of one training file; data.train here is a mixture of sources or a stream",
            hint="cross-validate on one source (data.train: FILE, data.streaming: false)",
        )
    if cfg.data.validation is not None:
        say(f"cross-validation holds out folds of data.train; data.validation ({cfg.data.validation}) is not used")
    lock_run_dir(cfg.run_dir)
    run_dir = prepare_run_dir(cfg.run_dir, resume=False, overwrite=overwrite)

    # 1. Folds over the original records; augmented copies stay on the training side.
    records = load_records(cfg.data.train, split=cfg.data.split, subset=cfg.data.subset)
    originals = [r for r in records if not r.data.get(AUGMENTATION_FIELD)]
    folds, stratified = _folds(originals, k, cfg.seed)

    # 2. One ordinary run per fold.
    result = CVResult(run_dir, k, stratified)
    for i, held_out in enumerate(folds, 1):
        fold_dir = run_dir / f"fold-{i}"
        held = {id(r) for r in held_out}
        keys = {record_key(r.data) for r in held_out}
        train = [r.data for r in records if id(r) not in held and not _copy_of(r, keys)]
        data_dir = run_dir / "folds" / f"fold-{i}"
        write_records(data_dir / "train.jsonl", train)
        write_records(data_dir / "validation.jsonl", [r.data for r in held_out])
        say(f"── fold {i} of {k}: {len(train)} train, {len(held_out)} held out ──")
        fold_overrides = [
            *overrides,
            f"data.train={data_dir / 'train.jsonl'}",
            f"data.validation={data_dir / 'validation.jsonl'}",
            "data.max_examples=null",
        ]
        finetune(config, overrides=fold_overrides, output_dir=str(fold_dir), report=report)
        result.folds.append({"fold": i, "train": len(train), "validation": len(held_out), **_fold_metrics(fold_dir)})

    # 3. Mean ± std per metric over the folds.
    names = sorted({key for fold in result.folds for key, v in fold.items() if _is_metric(key, v)})
    for name in names:
        values = [fold[name] for fold in result.folds if _is_metric(name, fold.get(name))]
        result.mean[name] = statistics.fmean(values)
        result.std[name] = statistics.stdev(values) if len(values) > 1 else 0.0
    atomic_write_json(run_dir / CV_FILE, result.as_dict())
    return result


def _folds(records: Sequence[Record], k: int, seed: int) -> tuple[list[list[Record]], bool]:
    """K disjoint folds covering every record: stratified by `label` when every record has one (scikit-learn)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(records) < k:
        raise LmtuneError(f"--cv {k}: only {len(records)} original records", hint="use fewer folds or more data")
    labels = [r.data.get("label") for r in records]
    stratified = all(label is not None for label in labels)
    if stratified:
        counts: dict[str, int] = {}
        for label in labels:
            counts[str(label)] = counts.get(str(label), 0) + 1
        smallest = min(counts.values())
        if smallest < k:
            raise LmtuneError(
                f"--cv {k}: class {min(counts, key=counts.get)!r} has only {smallest} records, fewer than the folds",
                hint="use fewer folds",
            )
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(records, [str(label) for label in labels])
    else:
        parts = KFold(n_splits=k, shuffle=True, random_state=seed).split(records)
    return [[records[j] for j in sorted(test)] for _, test in parts], stratified


def _copy_of(record: Record, keys: set[str]) -> bool:
    info = record.data.get(AUGMENTATION_FIELD)
    return isinstance(info, dict) and info.get("of") in keys


def _fold_metrics(fold_dir: Path) -> dict[str, Any]:
    summary = read_json(fold_dir, "summary.json")
    out = {key: summary.get(key) for key in SUMMARY_KEYS if summary.get(key) is not None}
    if (fold_dir / "eval.json").is_file():
        tuned = read_json(fold_dir, "eval.json").get("metrics", {}).get("tuned", {})
        out.update({key: value for key, value in tuned.items() if isinstance(value, (int, float))})
    return out


def _is_metric(key: str, value: Any) -> bool:
    return key not in ("fold", "train", "validation") and isinstance(value, (int, float)) and math.isfinite(value)
