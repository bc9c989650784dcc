"""Split data into train / validation / test: in memory for a run, or into files with a manifest.

``carve_validation`` takes a validation set out of the training examples when the user has no separate one.
``split_file`` writes seeded, optionally stratified and/or group-aware splits of a data file, with a
manifest that fingerprints each part. The index arithmetic is scikit-learn's (``train_test_split``,
``GroupShuffleSplit``, ``StratifiedGroupKFold``), which gets the rounding and the per-class balance right.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lmtune.data.load import load_records
from lmtune.data.records_io import file_sha256, output_suffix, write_bytes_atomic, write_records
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError

T = TypeVar("T")


def carve_validation(examples: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Split ``examples`` into (train, validation) by a seeded shuffle; both keep the original order.

    The same seed always picks the same validation members, so reruns and resumed runs evaluate on the
    same data. Keeping the original order inside each part leaves shuffling to the data loader.
    """
    n = len(examples)
    if not 0 < fraction < 1:
        raise LmtuneError(
            f"validation fraction must be between 0 and 1 (exclusive), got {fraction}",
            hint="use e.g. 0.1 for 10% of the training examples",
        )
    if n < 2:
        raise LmtuneError(
            f"cannot carve a validation set out of {n} example{'s' if n != 1 else ''}: at least 2 are needed",
            hint="add training data, or give a separate validation file",
        )
    # At least one validation example, and at least one left for training (round(0.9 * 2) would take both).
    size = min(max(1, round(fraction * n)), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    chosen = set(order[:size])
    train = [example for index, example in enumerate(examples) if index not in chosen]
    validation = [example for index, example in enumerate(examples) if index in chosen]
    return train, validation


# --- splitting a file ----------------------------------------------------------------------------

PARTS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitResult:
    out_dir: str
    manifest_path: str
    manifest: dict[str, Any]


def check_fractions(val: float, test: float) -> None:
    for option, value in (("--val", val), ("--test", test)):
        if not 0 <= value < 1:  # NaN fails this too
            raise LmtuneError(f"{option} must be a fraction in [0, 1), got {value}", hint="e.g. --val 0.1 --test 0.1")
    if val + test >= 1:
        raise LmtuneError(f"--val {val} and --test {test} leave nothing to train on", hint="keep their sum below 1")
    if val == 0 and test == 0:
        raise LmtuneError("--val and --test are both 0: nothing to split off", hint="e.g. --val 0.1 --test 0.1")


def split_records(
    records: Sequence[Record],
    *,
    val: float = 0.1,
    test: float = 0.1,
    stratify: str | None = None,
    group_by: str | None = None,
    seed: int = 42,
) -> dict[str, list[Record]]:
    """Seeded train / validation / test parts (those with a non-zero fraction), each in the original order.

    ``stratify`` keeps each value of that field in the same proportion in every part; ``group_by`` puts all
    records that share a value of that field in one part (then the fractions count groups, not records).
    With both, StratifiedGroupKFold takes one fold per part, so a fraction is rounded to 1/k (0.1 -> 1/10).
    """
    check_fractions(val, test)
    wanted = [name for name, fraction in (("train", 1), ("validation", val), ("test", test)) if fraction > 0]
    source = records[0].source if records else "the data"
    if len(records) < len(wanted):
        raise LmtuneError(f"{source} has {len(records)} record(s), too few to split into {', '.join(wanted)}")
    labels = _field_values(records, stratify, "--stratify") if stratify else None
    groups = _field_values(records, group_by, "--group-by") if group_by else None
    if stratify and labels is not None:
        _check_classes(records, labels, stratify, wanted)
    rest = np.arange(len(records))
    parts: dict[str, np.ndarray] = {}
    for name, fraction in (("test", test), ("validation", val / (1 - test))):
        if fraction > 0:
            rest, parts[name] = _carve(rest, fraction, labels, groups, seed, source, name, stratify, group_by)
    parts["train"] = rest
    return {name: [records[i] for i in sorted(parts[name])] for name in PARTS if name in parts}


def _field_values(records: Sequence[Record], field: str, option: str) -> np.ndarray:
    """The value of ``field`` in every record as a string key (lists and objects as sorted JSON)."""
    values = []
    for record in records:
        if field not in record.data or record.data[field] is None:
            problem = "is null" if field in record.data else f"missing (the record has keys {sorted(record.data)})"
            hint = f"{option} must name a field that every record has; fix the record or choose another field"
            raise DataError(record.source, record.line, field, problem, hint=hint)
        value = record.data[field]
        values.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False))
    return np.array(values, dtype=object)


def _check_classes(records: Sequence[Record], labels: np.ndarray, field: str, wanted: list[str]) -> None:
    """Every class must reach every part; sklearn would say "least populated class" without naming it."""
    counts = Counter(labels.tolist())
    label, count = min(counts.items(), key=lambda item: (item[1], item[0]))
    if count < len(wanted):
        first = records[labels.tolist().index(label)]
        raise LmtuneError(
            f"--stratify {field}: class {label!r} has only {count} record(s) (first at {first.source}:{first.line}); "
            f"stratifying into {', '.join(wanted)} needs at least {len(wanted)} per class",
            hint="add examples of that class, merge rare classes, or split without --stratify",
        )


def _carve(
    index: np.ndarray,
    fraction: float,
    labels: np.ndarray | None,
    groups: np.ndarray | None,
    seed: int,
    source: str,
    part: str,
    stratify: str | None,
    group_by: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Take ``fraction`` of ``index`` as ``part``; returns (rest, part) as indices into the records."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

    y = None if labels is None else labels[index]
    g = None if groups is None else groups[index]
    n = len(index)
    option = "--test" if part == "test" else "--val"
    if g is None:
        taken = math.ceil(fraction * n)  # sklearn's rounding of a float test_size
        if n - taken < 1:
            raise LmtuneError(f"{source}: {option} leaves no records for the other parts", hint=f"lower {option}")
        classes = len(set(y.tolist())) if y is not None else 1
        if min(taken, n - taken) < classes:
            raise LmtuneError(
                f"--stratify {stratify}: the {part} part would hold {taken} record(s) from {n}, fewer than the "
                f"{classes} classes, so some class would be missing from it",
                hint=f"raise {option}, or split without --stratify",
            )
    else:
        count = len(set(g.tolist()))
        needed = 2 if y is None else max(2, round(1 / fraction))
        if count < needed:
            raise LmtuneError(
                f"--group-by {group_by}: {count} distinct value(s) left for the {part} part, at least {needed} needed",
                hint="use more groups, lower the fractions, or split without --group-by",
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class ... less than n_splits"
            if g is None:
                rest, taken_index = train_test_split(index, test_size=fraction, random_state=seed, stratify=y)
                return rest, taken_index
            if y is None:
                splitter: Any = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
                rest_pos, part_pos = next(splitter.split(index, groups=g))
            else:
                splitter = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed)
                rest_pos, part_pos = next(splitter.split(index, y, g))
    except ValueError as error:
        raise LmtuneError(f"cannot split {source} ({part} part): {error}", hint=f"adjust {option}") from None
    if len(part_pos) == 0 or len(rest_pos) == 0:
        raise LmtuneError(f"cannot split {source}: the {part} part or the rest came out empty", hint=f"adjust {option}")
    return index[rest_pos], index[part_pos]


def split_file(
    source: str,
    out_dir: str | Path,
    *,
    val: float = 0.1,
    test: float = 0.1,
    stratify: str | None = None,
    group_by: str | None = None,
    seed: int = 42,
    overwrite: bool = False,
) -> SplitResult:
    """Write train/validation/test files (records unchanged) and ``manifest.json`` into ``out_dir``.

    The manifest records the seed, fractions and options that reproduce the split, and per part its file,
    count and sha256 (plus label counts when stratified), so a run can prove which data it trained on.
    Existing split files are kept unless ``overwrite``; the input itself is never written over.
    """
    check_fractions(val, test)
    out = Path(out_dir)
    suffix = output_suffix(source)
    names = [name for name, fraction in (("train", 1), ("validation", val), ("test", test)) if fraction > 0]
    targets = {name: out / f"{name}{suffix}" for name in PARTS}
    manifest_path = out / "manifest.json"
    source_path = Path(source)
    for path in [*targets.values(), manifest_path]:
        if source_path.is_file() and path.exists() and path.resolve() == source_path.resolve():
            raise LmtuneError(f"--out {out} would write over the input {source}", hint="choose another --out")
    existing = [str(p) for p in [*(targets[n] for n in names), manifest_path] if p.exists()]
    if existing and not overwrite:
        raise LmtuneError(f"split files already exist: {', '.join(existing)}", hint="pass --overwrite to replace them")
    records = load_records(source)
    parts = split_records(records, val=val, test=test, stratify=stratify, group_by=group_by, seed=seed)
    splits: dict[str, dict[str, Any]] = {}
    for name, part in parts.items():
        sha = write_records(targets[name], [record.data for record in part])
        info: dict[str, Any] = {"path": targets[name].name, "count": len(part), "sha256": sha}
        if stratify:
            info["labels"] = dict(sorted(Counter(_field_values(part, stratify, "--stratify").tolist()).items()))
        if group_by:
            info["groups"] = len(set(_field_values(part, group_by, "--group-by").tolist()))
        splits[name] = info
    for name in PARTS:  # on --overwrite, a part this split does not have must not linger from the earlier one
        if overwrite and name not in parts:
            targets[name].unlink(missing_ok=True)
    method = {
        (False, False): "train_test_split",
        (True, False): "train_test_split (stratified)",
        (False, True): "GroupShuffleSplit (fractions count groups)",
        (True, True): "StratifiedGroupKFold (a fraction f is one fold of round(1/f))",
    }[(bool(stratify), bool(group_by))]
    manifest = {
        "source": source,
        "source_sha256": file_sha256(source) if source_path.is_file() else None,
        "records": len(records),
        "seed": seed,
        "fractions": {"validation": val, "test": test},
        "options": {"stratify": stratify, "group_by": group_by, "method": method},
        "splits": splits,
    }
    write_bytes_atomic(manifest_path, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return SplitResult(str(out), str(manifest_path), manifest)
