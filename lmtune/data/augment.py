"""Augment a training split: noisy, reworded, back-translated or identifier-renamed copies of its records.

Each copy keeps every field of its original, changes only the chosen fields, and carries an ``augmentation``
field (strategy, source file, 1-based line, key of the original, seed) so later stages keep it on the training
side and `lmtune data check` can flag it in a validation or test file: a copy of a held-out example in training
leaks that example's answer, and a copy in the held-out data measures the augmentation instead of the model.

By default only the input side changes (the text of raw-text data, the prompt, the instruction and its input,
the user turns): noise in the targets would teach the model to write noise. code-rename changes the code
wherever it is, answers included, because renamed code is still correct code.

The strategies themselves (what each does to the chosen texts) are in ``lmtune.data.augment_strategies``; this
module picks the records and fields, runs a strategy over them, and builds the copies with their provenance.
"""

from __future__ import annotations

import copy as copying
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.data.augment_strategies import (
    MODEL_STRATEGIES,
    STRATEGIES,
    AugmentOptions,
    Generate,
    Job,
    check_template,
)
from lmtune.data.formats import AUGMENTATION_FIELD, detect_format
from lmtune.data.prepare import record_key
from lmtune.data.textnoise import NOISE_LEVELS
from lmtune.data.types import Record, json_type
from lmtune.errors import DataError, LmtuneError

# File-name words that mark held-out data; augmenting such a file would put copies where scores are measured.
HELD_OUT_WORDS = frozenset({"val", "valid", "validation", "dev", "test", "testing", "eval", "heldout", "holdout"})
OUTPUT_SUFFIXES = (".jsonl", ".json")  # CSV cannot hold the nested `augmentation` object


# ---- records -------------------------------------------------------------------------------------------------------

# Default fields per record shape: the input side, and for code-rename the code (answers and inputs).
INPUT_FIELDS = {
    "text": ("text",),
    "prompt_completion": ("prompt",),
    "instruction": ("instruction", "input"),
    "messages": ("messages:user",),
}
CODE_FIELDS = {
    "text": ("text",),
    "prompt_completion": ("completion", "prompt"),
    "instruction": ("output", "input"),
    "messages": ("messages:assistant", "messages:user"),
}

# Where a text lives in a record: (column, None) for a string column, (column, i) for message i's content.
_Slot = tuple[str, int | None]


@dataclass(frozen=True)
class Augmented:
    """The copies made (raw records, ready to write) and why others were not made."""

    copies: list[dict[str, Any]]
    fields: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # copies not made, by reason
    notes: dict[str, int] = field(default_factory=dict)  # what happened to the texts (rewritten, snippets...)


def augment_records(
    records: Sequence[Record],
    strategy: str,
    *,
    fields: Sequence[str] | None = None,
    copies: int = 1,
    seed: int = 0,
    options: AugmentOptions | None = None,
    generate: Generate | None = None,
    model: str | None = None,
) -> Augmented:
    """``copies`` augmented copies of every record (fewer where a copy would equal its original or another copy).

    ``fields`` are column names to change instead of the defaults; a column holding chat messages takes
    ``messages`` (every turn) or ``messages:<role>`` (that role's turns). Records that are augmented copies
    already are refused (``check_originals``).
    """
    options = options or AugmentOptions()
    check_request(strategy, options=options, copies=copies)
    if not records:
        return Augmented([], ())
    check_originals(records)
    selectors = tuple(fields) if fields else _default_fields(records[0], strategy)
    jobs: list[Job] = []
    owners: list[tuple[Record, int, list[_Slot]]] = []
    skipped: Counter[str] = Counter()
    for record in records:
        slots = [slot for slot in _slots(record, selectors) if _get(record.data, slot).strip()]
        for number in range(1, copies + 1):
            if not slots:
                skipped["no text in the chosen fields"] += 1
                continue
            rng = random.Random(f"lmtune-augment:{strategy}:{seed}:{record.line}:{number}")
            jobs.append(Job(tuple(_get(record.data, slot) for slot in slots), rng))
            owners.append((record, number, slots))
    outcomes = STRATEGIES[strategy](jobs, options, generate)
    made: list[dict[str, Any]] = []
    notes: Counter[str] = Counter()
    seen: dict[int, set[tuple[str, ...]]] = {}
    for job, outcome, (record, number, slots) in zip(jobs, outcomes, owners, strict=True):
        notes.update(outcome.notes)
        earlier = seen.setdefault(id(record), set())
        if outcome.texts is None:
            skipped[outcome.reason or "no change"] += 1
        elif outcome.texts == job.texts:
            skipped["unchanged"] += 1
        elif outcome.texts in earlier:
            skipped["same as another copy"] += 1
        else:
            earlier.add(outcome.texts)
            made.append(_copy(record, slots, outcome.texts, strategy, seed, number, model))
    return Augmented(made, selectors, dict(skipped), dict(notes))


@dataclass(frozen=True)
class AugmentReport:
    """What `lmtune data augment` wrote, for its summary and ``--json``."""

    source: str
    out: str
    sha256: str
    strategy: str
    seed: int
    model: str | None
    originals: int
    copies: int
    written: int
    fields: tuple[str, ...]
    skipped: dict[str, int]
    notes: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "fields": list(self.fields)}


def check_originals(records: Sequence[Record]) -> None:
    """Copies are made from original records only: noise on noise drifts away from the data, and a copy's
    original is in the file it came from anyway."""
    for record in records:
        if record.data.get(AUGMENTATION_FIELD):
            raise DataError(
                record.source,
                record.line,
                AUGMENTATION_FIELD,
                "this record is an augmented copy already; copies are made from original records only",
                hint="augment the original file (without --only-new the output holds the originals first), "
                "or drop the records that have an 'augmentation' field",
            )


def check_request(strategy: str, *, options: AugmentOptions, copies: int = 1) -> None:
    """Fail on bad settings before any record or model is loaded."""
    if strategy not in STRATEGIES:
        raise LmtuneError(f"unknown augmentation strategy '{strategy}'", hint=f"use one of {', '.join(STRATEGIES)}")
    if copies < 1:
        raise LmtuneError(f"--copies must be at least 1, got {copies}")
    if options.rate is not None and not 0 < options.rate <= 1:
        raise LmtuneError(f"--rate must be in (0, 1], got {options.rate}", hint="e.g. 0.05: one letter in twenty")
    if options.noise_level not in NOISE_LEVELS:
        raise LmtuneError(f"unknown noise level {options.noise_level!r}", hint=f"use one of {', '.join(NOISE_LEVELS)}")
    if options.template is not None:
        if strategy not in MODEL_STRATEGIES:
            raise LmtuneError(f"--template applies to {' and '.join(MODEL_STRATEGIES)}, not to '{strategy}'")
        check_template(options.template, ("text",) if strategy == "paraphrase" else ("text", "source", "target"))


def check_model(strategy: str, model: str | None) -> None:
    """paraphrase and backtranslate need a model; the others must not be given one (it would go unused)."""
    if strategy in MODEL_STRATEGIES and not model:
        raise LmtuneError(
            f"strategy '{strategy}' needs a model to generate with",
            hint="name one with --model: a hub id (e.g. google/flan-t5-base), a local directory, or preset:tiny-chat",
        )
    if strategy not in MODEL_STRATEGIES and model:
        raise LmtuneError(
            f"--model applies to {' and '.join(MODEL_STRATEGIES)}, not to '{strategy}'",
            hint="drop --model, or pick a model-based strategy",
        )


def check_paths(source: str, out: str | Path, *, overwrite: bool = False, force: bool = False) -> Path:
    """Refuse to augment held-out data, to write anything but JSON, and to replace a file unasked."""
    words = set(re.split(r"[^a-z0-9]+", Path(source).stem.lower()))
    held_out = sorted(words & HELD_OUT_WORDS)
    if held_out and not force:
        raise LmtuneError(
            f"{source} looks like a validation or test split (its name says '{held_out[0]}'); augmentation is for "
            "the training split only: copies of held-out examples make the scores measure the augmentation",
            hint="augment the training file; if this file is training data, pass --force",
        )
    path = Path(out)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise LmtuneError(
            f"--out {out}: augmented data is written as .jsonl or .json",
            hint="each copy carries a nested 'augmentation' object that CSV cannot hold; name the output *.jsonl",
        )
    if Path(source).exists() and path.resolve() == Path(source).resolve():
        raise LmtuneError(f"--out {out} is the input file", hint="write the augmented data to a new file")
    if path.exists() and not overwrite:
        raise LmtuneError(f"{out} exists already", hint="choose another --out, or pass --overwrite to replace it")
    return path


def _default_fields(first: Record, strategy: str) -> tuple[str, ...]:
    try:
        shape = detect_format(first, {})
    except LmtuneError as error:
        raise LmtuneError(error.message, hint="name the columns to change with --fields") from None
    return (CODE_FIELDS if strategy == "code-rename" else INPUT_FIELDS)[shape]


def _slots(record: Record, selectors: Sequence[str]) -> list[_Slot]:
    slots: list[_Slot] = []
    for selector in selectors:
        column, _, role = selector.partition(":")
        if column not in record.data:
            raise DataError(
                record.source,
                record.line,
                column,
                f"missing (the record has keys {sorted(record.data)})",
                hint="name existing columns with --fields",
            )
        value = record.data[column]
        if isinstance(value, list):
            for i, message in enumerate(value):
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    raise DataError(
                        record.source, record.line, f"{column}[{i}]", "must be an object with string content"
                    )
                if not role or message.get("role") == role:
                    slots.append((column, i))
        elif isinstance(value, str) and not role:
            slots.append((column, None))
        elif value is not None:
            what = "a string" if role else "a string or a list of messages"
            raise DataError(record.source, record.line, column, f"must be {what} to augment, got {json_type(value)}")
    return slots


def _get(data: Mapping[str, Any], slot: _Slot) -> str:
    column, index = slot
    value = data.get(column)
    if index is None:
        return value if isinstance(value, str) else ""
    return value[index]["content"]


def _copy(
    record: Record,
    slots: Sequence[_Slot],
    texts: Sequence[str],
    strategy: str,
    seed: int,
    number: int,
    model: str | None,
) -> dict[str, Any]:
    data = copying.deepcopy(record.data)
    for (column, index), text in zip(slots, texts, strict=True):
        if index is None:
            data[column] = text
        else:
            data[column][index]["content"] = text
    info: dict[str, Any] = {
        "strategy": strategy,
        "source": record.source,
        "line": record.line,
        "of": record_key(record.data),
        "seed": seed,
        "copy": number,
    }
    if model:
        info["model"] = model
    data[AUGMENTATION_FIELD] = info
    return data
