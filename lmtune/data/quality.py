"""What `lmtune data check` finds in a dataset: per-record problems and the figures of a quality report.

Each check is a plain function returning `Finding`s that point at a file and 1-based line; `lmtune.api.check_data`
runs them over the splits of a config (or one file) and assembles the `CheckReport`. Severity decides the exit
code: an error is something training would refuse or get wrong, a warning is something a person should look at.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from lmtune.data.dedup import RecordTexts, find_duplicates
from lmtune.data.formats import AUGMENTATION_FIELD, ChatExample, Example
from lmtune.data.leakage import Split, find_leaks
from lmtune.data.pii import find_pii
from lmtune.data.types import Record, json_type
from lmtune.errors import DataError

Severity = Literal["error", "warning", "info"]
PERCENTILES = (0, 50, 90, 95, 99, 100)
# Line breaks and tabs are text; other C0/C1 controls, zero-width and bidi marks are invisible and often break
# tokenizers or hide content (U+202E reverses the text a reviewer sees).
_ALLOWED_CONTROLS = {"\n", "\t", "\r"}
_INVISIBLE = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e"}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str
    message: str
    split: str | None = None
    source: str | None = None
    line: int | None = None
    field: str | None = None

    @property
    def where(self) -> str:
        if self.source is None:
            return ""
        return f"{self.source}:{self.line}" if self.line is not None else self.source

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class SplitReport:
    """The figures of one split; `lengths` are rendered token lengths before truncation."""

    name: str
    source: str
    records: int = 0
    examples: int = 0
    format: str | None = None
    lengths: list[int] = field(default_factory=list, repr=False)
    truncated: int = 0
    dropped: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    roles: dict[str, int] = field(default_factory=dict)
    turns: dict[str, float] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "lengths"}
        out["length_percentiles"] = length_percentiles(self.lengths)
        return out


@dataclass
class CheckReport:
    splits: dict[str, SplitReport]
    findings: list[Finding]
    template: dict[str, Any]
    settings: dict[str, Any]
    seconds: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def exit_code(self, strict: bool = False) -> int:
        """0 clean (or warnings only), 1 warnings under --strict, 2 errors."""
        if self.errors:
            return 2
        return 1 if strict and self.warnings else 0

    def as_dict(self) -> dict[str, Any]:
        counts = Counter(f.severity for f in self.findings)
        return {
            "ok": not self.errors,
            "errors": counts["error"],
            "warnings": counts["warning"],
            "splits": {name: split.as_dict() for name, split in self.splits.items()},
            "template": self.template,
            "settings": self.settings,
            "findings": [f.as_dict() for f in self.findings],
            "seconds": round(self.seconds, 3),
        }


def problem_findings(problems: Iterable[DataError], split: str) -> list[Finding]:
    """The record problems `convert_records` collected, as errors (training refuses these records)."""
    return [Finding("error", "record", p.problem, split, p.source, p.line, p.field) for p in problems]


def text_fields(record: Record) -> Iterable[tuple[str, str]]:
    """(field path, text) for every string in a record, messages included, e.g. ('messages[1].content', ...)."""
    for key, value in record.data.items():
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    yield f"{key}[{i}]", item
                elif isinstance(item, dict):
                    for k, v in item.items():
                        if isinstance(v, str):
                            yield f"{key}[{i}].{k}", v


def character_findings(records: Sequence[Record], split: str) -> list[Finding]:
    """Control characters, invisible marks and U+FFFD (text that was once decoded with the wrong encoding)."""
    out = []
    for record in records:
        for path, text in text_fields(record):
            bad = sorted(c for c in set(text) if _is_control(c))
            if bad:
                names = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
                out.append(
                    Finding(
                        "warning",
                        "characters",
                        f"control or invisible characters ({names})",
                        split,
                        record.source,
                        record.line,
                        path,
                    )
                )
            if "\ufffd" in text:
                out.append(
                    Finding(
                        "warning",
                        "characters",
                        "U+FFFD replacement characters: the text was decoded from a "
                        "non-UTF-8 encoding before it was saved",
                        split,
                        record.source,
                        record.line,
                        path,
                    )
                )
    return out


def _is_control(c: str) -> bool:
    return c in _INVISIBLE or (unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROLS)


def pii_findings(records: Sequence[Record], split: str) -> list[Finding]:
    """Personal data, one finding per field, with masked samples so the report does not repeat it."""
    out = []
    for record in records:
        for path, text in text_fields(record):
            matches = find_pii(text)
            if matches:
                kinds = Counter(m.kind for m in matches)
                what = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
                sample = ", ".join(m.masked for m in matches[:3])
                out.append(
                    Finding(
                        "warning",
                        "personal-data",
                        f"personal data: {what} ({sample}); mask with `lmtune data redact`",
                        split,
                        record.source,
                        record.line,
                        path,
                    )
                )
    return out


def role_findings(examples: Sequence[Example], split: str) -> list[Finding]:
    """Conversations whose turns are out of order: most chat templates (Llama 2, Mistral) reject them."""
    out = []
    for ex in examples:
        if not isinstance(ex, ChatExample):
            continue
        turns = [m for m in ex.messages if m.role != "system"]
        if turns and turns[0].role == "assistant":
            out.append(
                Finding(
                    "warning",
                    "roles",
                    "the conversation starts with an assistant turn",
                    split,
                    ex.source,
                    ex.line,
                    "messages",
                )
            )
        for prev, (i, m) in zip(turns, enumerate(turns[1:], 1), strict=False):
            if m.role == prev.role != "tool":  # parallel tool calls answer in consecutive tool turns
                out.append(
                    Finding(
                        "warning",
                        "roles",
                        f"roles out of order: two {m.role} turns in a row (turn {i})",
                        split,
                        ex.source,
                        ex.line,
                        "messages",
                    )
                )
                break
        if turns and turns[-1].role == "user":
            out.append(
                Finding(
                    "info",
                    "roles",
                    "ends with a user turn that nothing answers (not trained on)",
                    split,
                    ex.source,
                    ex.line,
                    "messages",
                )
            )
    return out


def role_balance(examples: Sequence[Example]) -> tuple[dict[str, int], dict[str, float]]:
    roles: Counter[str] = Counter()
    turns = []
    for ex in examples:
        if isinstance(ex, ChatExample):
            roles.update(m.role for m in ex.messages)
            turns.append(len(ex.messages))
    stats = {"mean": round(float(np.mean(turns)), 2), "max": int(max(turns))} if turns else {}
    return dict(roles), stats


def label_findings(records: Sequence[Record], label: str, split: str) -> tuple[dict[str, int], list[Finding]]:
    """Label counts and problems: missing or empty labels, mixed types, classes too small to learn or split."""
    out: list[Finding] = []
    counts: Counter[str] = Counter()
    types: Counter[str] = Counter()
    for r in records:
        value = r.data.get(label)
        if value is None or (isinstance(value, str) and not value.strip()):
            problem = "missing" if label not in r.data else "is empty"
            out.append(Finding("error", "label", problem, split, r.source, r.line, label))
            continue
        if isinstance(value, (dict, list)) or (isinstance(value, float) and not value.is_integer()):
            out.append(
                Finding(
                    "error", "label", f"must be a class name or integer, got {value!r}", split, r.source, r.line, label
                )
            )
            continue
        types[json_type(value)] += 1
        counts[str(int(value) if isinstance(value, float) else value)] += 1
    if len(types) > 1:
        out.append(
            Finding(
                "warning",
                "label",
                f"labels mix types ({dict(types)}): '1' and 1 would be two classes",
                split,
                records[0].source,
                None,
                label,
            )
        )
    if counts:
        for name, n in sorted(counts.items()):
            if n < 2:
                out.append(
                    Finding(
                        "warning",
                        "label",
                        f"class {name!r} has {n} example: too few to learn or to stratify a split",
                        split,
                        records[0].source,
                        None,
                        label,
                    )
                )
        most, least = max(counts.values()), min(counts.values())
        if len(counts) > 1 and most >= 10 * least:
            out.append(
                Finding(
                    "warning",
                    "label",
                    f"classes are imbalanced {most}:{least}; consider class weights or resampling",
                    split,
                    records[0].source,
                    None,
                    label,
                )
            )
    return dict(sorted(counts.items())), out


def augmented_findings(records: Sequence[Record], split: str) -> list[Finding]:
    """Augmented copies belong to the training split: in validation or test they inflate the scores."""
    return [
        Finding(
            "error",
            "augmentation",
            f"an augmented copy (of {_origin(r)}) in the {split} split",
            split,
            r.source,
            r.line,
            AUGMENTATION_FIELD,
        )
        for r in records
        if r.data.get(AUGMENTATION_FIELD)
    ]


def _origin(record: Record) -> str:
    info = record.data.get(AUGMENTATION_FIELD)
    if isinstance(info, dict):
        return f"{info.get('source', '?')}:{info.get('line', '?')}"
    return str(info)


def duplicate_findings(texts: RecordTexts, split: str, near: float | None) -> list[Finding]:
    """Exact (normalised) and near duplicates inside one split, each pointing at the copy and its original."""
    return [
        Finding(
            "warning",
            f"{d.kind}-duplicate",
            f"{'exact' if d.kind == 'exact' else f'near ({d.similarity:.2f})'} duplicate of {d.of.where}",
            split,
            d.doc.source,
            d.doc.line,
        )
        for d in find_duplicates(texts.whole, near=near)
    ]


def leakage_findings(train: RecordTexts, validation: RecordTexts, near: float | None) -> list[Finding]:
    """Validation examples that training also sees: their validation loss measures memory, not learning."""
    splits = [Split("train", train.whole, train.inputs), Split("validation", validation.whole, validation.inputs)]
    return [
        Finding(
            "warning",
            "leakage",
            f"{leak.kind} leak ({leak.similarity:.2f}) of {leak.a.source}:{leak.a.line} (train)",
            "validation",
            leak.b.source,
            leak.b.line,
        )
        for leak in find_leaks(splits, near=near)
    ]


def length_percentiles(lengths: Sequence[int]) -> dict[str, int]:
    if not lengths:
        return {}
    values = np.percentile(np.asarray(lengths), PERCENTILES, method="nearest")
    names = {0: "min", 100: "max"}
    return {names.get(p, f"p{p}"): int(v) for p, v in zip(PERCENTILES, values, strict=True)}


def length_findings(report: SplitReport, max_length: int, overlong: str) -> list[Finding]:
    """Examples max_length cuts: truncated ones lose their end, dropped ones (nothing left to train) are lost."""
    n = len(report.lengths)
    over = sum(length > max_length for length in report.lengths)
    if not over:
        return []
    if overlong == "chunk":
        message = f"{over} of {n} documents are longer than max_length={max_length} tokens: cut into chunks"
        return [Finding("info", "length", message, report.name, report.source)]
    if overlong == "drop":
        fate = "all dropped"
    else:
        fate = f"{report.truncated} truncated, {report.dropped} dropped because no trained token is left"
    message = (
        f"{over} of {n} examples ({100 * over / n:.1f}%) are longer than max_length={max_length} tokens "
        f"(longest {max(report.lengths)}): {fate}; raise data.max_length or shorten them"
    )
    return [Finding("warning", "length", message, report.name, report.source)]
