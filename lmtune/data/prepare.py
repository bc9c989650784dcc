"""From the data section of a config to validated train/validation examples, with their fingerprints."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmtune.config import DataConfig
from lmtune.data.formats import Example, detect_format, normalize
from lmtune.data.load import load_records
from lmtune.data.split import carve_validation
from lmtune.errors import LmtuneError


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


def file_sha256(source: str) -> str | None:
    path = Path(source)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load(cfg: DataConfig, source: str, split: str) -> tuple[list[Example], str, int]:
    records = load_records(source, split=split, subset=cfg.subset)
    fmt = cfg.format if cfg.format != "auto" else detect_format(records[0], cfg.columns)
    examples = normalize(records, format=fmt, columns=cfg.columns, prompt_template=cfg.prompt_template)
    return examples, fmt, len(records)


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    train, fmt, n_train = _load(cfg, cfg.train, cfg.split)
    if cfg.max_examples is not None:
        train = train[: cfg.max_examples]
    info: dict[str, dict[str, Any]] = {
        "train": {"source": cfg.train, "file_sha256": file_sha256(cfg.train), "records": n_train}
    }
    if cfg.validation is not None:
        validation, val_fmt, n_val = _load(cfg, cfg.validation, cfg.validation_split)
        if val_fmt != fmt:
            # Each shape renders differently (chat vs raw text): the validation loss would measure something else.
            raise LmtuneError(
                f"data.validation {cfg.validation} holds {val_fmt} records but data.train {cfg.train} holds {fmt} "
                "records",
                hint="give both splits the same record shape (data.format applies to both)",
            )
        info["validation"] = {"source": cfg.validation, "file_sha256": file_sha256(cfg.validation), "records": n_val}
    elif cfg.val_fraction > 0:
        train, validation = carve_validation(train, cfg.val_fraction, seed)
        info["validation"] = {"source": f"{cfg.train} (val_fraction={cfg.val_fraction}, seed={seed})"}
    else:
        validation = []
    for name, examples in (("train", train), ("validation", validation)):
        if name in info:
            info[name].update(examples=len(examples), fingerprint=fingerprint(examples))
    return Splits(train, validation, fmt, info)
