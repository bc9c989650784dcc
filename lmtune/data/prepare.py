"""From the data section of a config to validated train/validation examples, with their fingerprints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmtune.config import DataConfig
from lmtune.data.formats import AUGMENTATION_FIELD, Example, detect_format, normalize
from lmtune.data.load import Record, load_records
from lmtune.data.split import carve_validation
from lmtune.errors import LmtuneError
from lmtune.fileio import file_sha256


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    format: str
    info: dict[str, dict[str, Any]] = field(default_factory=dict)


def fingerprint(examples: list[Example]) -> str:
    """Content hash of the normalised examples: the same data gives the same hash whatever file it came from."""
    h = hashlib.sha256()
    for ex in examples:
        record = {k: v for k, v in asdict(ex).items() if k not in ("source", "line")}
        h.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def source_sha256(source: str) -> str | None:
    """The sha256 of a local data file; None for hub datasets and saved dataset directories."""
    return file_sha256(source) if Path(source).is_file() else None


def record_key(data: dict[str, Any]) -> str:
    """Content hash of a raw record, which `lmtune data augment` writes into each copy as `augmentation.of`."""
    body = {k: v for k, v in data.items() if k != AUGMENTATION_FIELD}
    return hashlib.sha1(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def carve_records(
    records: Sequence[Record], examples: Sequence[Example], fraction: float, seed: int
) -> tuple[tuple[list[Record], list[Example]], tuple[list[Record], list[Example]]]:
    """Carve validation out of (record, example) pairs, keeping augmented copies out of it.

    Only original records can be drawn for validation (with the same seeded draw as `carve_validation`, so data
    without augmented copies splits exactly as before), and a copy whose original was drawn is dropped: it is a
    paraphrase of a validation example and would leak it into training.
    """
    originals = [i for i, r in enumerate(records) if not r.data.get(AUGMENTATION_FIELD)]
    _, chosen = carve_validation(originals, fraction, seed)
    val_set = set(chosen)
    held_out = {record_key(records[i].data) for i in chosen}

    def leaks(r: Record) -> bool:
        info = r.data.get(AUGMENTATION_FIELD)
        return isinstance(info, dict) and info.get("of") in held_out

    train = [i for i in range(len(records)) if i not in val_set and not leaks(records[i])]
    pick = lambda idx: ([records[i] for i in idx], [examples[i] for i in idx])  # noqa: E731
    return pick(train), pick(sorted(val_set))


def _load(cfg: DataConfig, source: str, split: str) -> tuple[list[Record], list[Example], str]:
    records = load_records(source, split=split, subset=cfg.subset)
    fmt = cfg.format if cfg.format != "auto" else detect_format(records[0], cfg.columns)
    examples = normalize(records, format=fmt, columns=cfg.columns, prompt_template=cfg.prompt_template)
    return records, examples, fmt


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    train_records, train, fmt = _load(cfg, cfg.train, cfg.split)
    n_train = len(train_records)
    if cfg.max_examples is not None:
        train_records, train = train_records[: cfg.max_examples], train[: cfg.max_examples]
    info: dict[str, dict[str, Any]] = {
        "train": {"source": cfg.train, "file_sha256": source_sha256(cfg.train), "records": n_train}
    }
    if cfg.validation is not None:
        val_records, validation, val_fmt = _load(cfg, cfg.validation, cfg.validation_split)
        n_val = len(val_records)
        if val_fmt != fmt:
            # Each shape renders differently (chat vs raw text): the validation loss would measure something else.
            raise LmtuneError(
                f"data.validation {cfg.validation} holds {val_fmt} records but data.train {cfg.train} holds {fmt} "
                "records",
                hint="give both splits the same record shape (data.format applies to both)",
            )
        info["validation"] = {"source": cfg.validation, "file_sha256": source_sha256(cfg.validation), "records": n_val}
    elif cfg.val_fraction > 0:
        (_, train), (_, validation) = carve_records(train_records, train, cfg.val_fraction, seed)
        info["validation"] = {"source": f"{cfg.train} (val_fraction={cfg.val_fraction}, seed={seed})"}
    else:
        validation = []
    for name, examples in (("train", train), ("validation", validation)):
        if name in info:
            info[name].update(examples=len(examples), fingerprint=fingerprint(examples))
    return Splits(train, validation, fmt, info)
