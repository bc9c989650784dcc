"""Personal data in training text: e-mail addresses, phone numbers, payment card and bank account numbers.

A fine-tuned model can repeat what it was trained on, so personal data found here should be masked before
training (`lmtune data redact`). Candidates are found by pattern and then confirmed by maintained validators,
which is what keeps order numbers, dates and ISBNs from being flagged: phone numbers by Google's
libphonenumber (`phonenumbers`), card numbers by the Luhn checksum and IBANs by their ISO 13616 mod-97 checksum
(`python-stdnum`). Presidio would add names and addresses, but it needs spaCy models downloaded at run time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
from stdnum import iban, luhn

from lmtune.errors import LmtuneError

KINDS = ("email", "phone", "card", "iban")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD_NUMBER]", "iban": "[IBAN]"}

# RFC 5322 is looser, but real addresses in text look like this, and a looser pattern flags code (a@b).
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# 13-19 digits, optionally grouped by single spaces or dashes (how cards are written).
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_PHONE_REGION = "US"  # numbers written without a country code are read as North American


@dataclass(frozen=True)
class Match:
    kind: str
    start: int
    end: int
    text: str

    @property
    def masked(self) -> str:
        """Enough to find it again in the file, not enough to repeat the personal data in a report."""
        keep = 2 if self.kind != "email" else 1
        return self.text[:keep] + "…" + self.text[-keep:] if len(self.text) > 2 * keep + 1 else "…"


def find_pii(text: str, kinds: Sequence[str] = KINDS) -> list[Match]:
    """Every confirmed match in ``text``, ordered by position, overlaps resolved in favour of the earlier kind."""
    found: list[Match] = []
    for kind in kinds:
        found.extend(_FINDERS[kind](text))
    found.sort(key=lambda m: (m.start, KINDS.index(m.kind)))
    out: list[Match] = []
    for m in found:
        if out and m.start < out[-1].end:
            continue  # a card number is not also a phone number
        out.append(m)
    return out


def redact(text: str, kinds: Sequence[str] = KINDS) -> tuple[str, list[Match]]:
    """``text`` with each match replaced by its placeholder, and the matches."""
    matches = find_pii(text, kinds)
    pieces, pos = [], 0
    for m in matches:
        pieces += [text[pos : m.start], PLACEHOLDERS[m.kind]]
        pos = m.end
    pieces.append(text[pos:])
    return "".join(pieces), matches


def check_kinds(kinds: Sequence[str]) -> list[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise LmtuneError(f"unknown personal-data kind(s) {unknown}", hint=f"choose from {', '.join(KINDS)}")
    return list(kinds)


def _emails(text: str) -> Iterator[Match]:
    for m in _EMAIL.finditer(text):
        yield Match("email", m.start(), m.end(), m.group())


def _cards(text: str) -> Iterator[Match]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        # Issuer prefixes of the major networks (Visa 4, Mastercard 2/5, Amex 3, Discover/UnionPay 6) and Luhn.
        if digits[0] in "23456" and luhn.is_valid(digits) and len(set(digits)) > 1:
            yield Match("card", m.start(), m.end(), m.group())


def _ibans(text: str) -> Iterator[Match]:
    for m in _IBAN.finditer(text):
        if iban.is_valid(m.group()):
            yield Match("iban", m.start(), m.end(), m.group())


# Seven or more digits, each within four characters of the next: the least a phone number is written with.
_DIGIT_RUN = re.compile(r"(?:\d\D{0,4}){6,}\d")
_CONTEXT = 40  # characters kept around a run: the matcher looks at the text next to a number


def _phones(text: str) -> Iterator[Match]:
    """libphonenumber's matcher over the stretches of ``text`` that hold seven digits close together.

    The matcher tries every digit group as a candidate, up to 65,535 of them: on a 5 MB line of code (loop
    indices, constants) that took 4.5 s and found nothing. It runs on the stretches that could hold a number
    instead, each with the text around it, so what it finds and where are the same.
    """
    spans: list[list[int]] = []
    for run in _DIGIT_RUN.finditer(text):
        start, end = max(0, run.start() - _CONTEXT), min(len(text), run.end() + _CONTEXT)
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    for start, end in spans:
        for m in phonenumbers.PhoneNumberMatcher(text[start:end], _PHONE_REGION, leniency=phonenumbers.Leniency.VALID):
            yield Match("phone", start + m.start, start + m.end, m.raw_string)


_FINDERS = {"email": _emails, "phone": _phones, "card": _cards, "iban": _ibans}


@dataclass(frozen=True)
class Redaction:
    source: str
    line: int
    field: str
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class RedactResult:
    source: str
    out: str
    records: int
    redactions: list[Redaction]
    sha256: str

    def counts(self) -> dict[str, int]:
        return dict(Counter(kind for r in self.redactions for kind in r.kinds))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "out": self.out,
            "records": self.records,
            "records_changed": len({r.line for r in self.redactions}),
            "counts": self.counts(),
            "redactions": [
                {"source": r.source, "line": r.line, "field": r.field, "kinds": list(r.kinds)} for r in self.redactions
            ],
            "sha256": self.sha256,
        }


def redact_file(source: str, out: str, *, kinds: Sequence[str] = KINDS, overwrite: bool = False) -> RedactResult:
    """Write ``source`` to ``out`` with personal data masked in every string field (chat messages included)."""
    from lmtune.data.load import load_records
    from lmtune.data.records_io import write_records

    kinds = check_kinds(kinds)
    if Path(out).exists() and not overwrite:
        raise LmtuneError(f"{out} exists", hint="pass --overwrite to replace it, or choose another --out")
    records = load_records(source)
    redactions: list[Redaction] = []
    rows = []
    for record in records:

        def clean(value: Any, path: str, line: int = record.line) -> Any:
            if isinstance(value, str):
                text, matches = redact(value, kinds)
                if matches:
                    redactions.append(Redaction(source, line, path, tuple(sorted({m.kind for m in matches}))))
                return text
            if isinstance(value, list):
                return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
            if isinstance(value, dict):
                return {k: clean(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            return value

        rows.append(clean(record.data, ""))
    digest = write_records(out, rows)
    return RedactResult(source, out, len(records), redactions, digest)
