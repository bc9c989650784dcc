"""Exact and near-duplicate examples: find them, and write a file without them.

Exact duplicates share the sha1 of their normalised text (case, punctuation and whitespace do not count).
Near duplicates are found with MinHash + LSH (datasketch) over shingles of the normalised text; LSH only
proposes candidates, and every candidate is verified with the exact Jaccard similarity of the two shingle
sets, which is the figure we report and compare with the threshold.

The default shingles are the words and word pairs of the text. Words alone would make "Ann is older than
Bob" a copy of "Bob is older than Ann"; longer word n-grams (or character 5-grams) punish short texts for
every edit: one swapped word in a 20-word instruction leaves word 3-grams at 0.75 and character 5-grams at
about 0.82, below a 0.85 threshold, while words + pairs keep it near 0.87. Character shingles
(``shingles="char"``) forgive changed word endings better ("major" / "majoring") and remain available.

The shared "record -> text" step (``record_docs``) lives here too, for dedup and leakage alike.
"""

from __future__ import annotations

import hashlib
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm import tqdm

from lmtune.data.formats import FORMATS, TextExample, detect_format, normalize
from lmtune.data.load import load_records
from lmtune.data.records_io import write_records
from lmtune.data.text import Doc, example_input, example_text, normalize_text
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError

if TYPE_CHECKING:
    from datasketch import MinHash

Shingles = Literal["char", "word"]
SHINGLE_SIZES: Mapping[str, int] = {"char": 5, "word": 2}
DEFAULT_NEAR = 0.85
NUM_PERM = 128
SEED = 1  # fixed: the same data always yields the same candidates
_LSH_RECALL = 0.999  # chance that LSH proposes a pair whose similarity is exactly the threshold


@dataclass(frozen=True)
class RecordTexts:
    """The text of every record (``whole``) and, where the shape has one, its input side (``inputs``)."""

    whole: list[Doc]
    inputs: list[Doc] | None
    shape: str  # a record shape from formats.py, or "fields"


def record_docs(
    records: Sequence[Record],
    *,
    fields: Sequence[str] | None = None,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
) -> RecordTexts:
    """What the checks compare for each record: the named ``fields`` joined, or the record shape's text.

    Instruction records are rendered without the Alpaca boilerplate (``{instruction}\\n\\n{input}``):
    the template is the same long text in every record and would make any two records look alike.
    """
    if fields:
        return RecordTexts([Doc(_joined(r, fields), r.source, r.line) for r in records], None, "fields")
    columns = dict(columns or {})
    if format == "auto":
        try:
            format = detect_format(records[0], columns)
        except LmtuneError:
            first = records[0]
            raise LmtuneError(
                f"cannot tell which text to compare in {first.source}: its first record (line {first.line}) "
                f"has keys {sorted(first.data)}",
                hint=f"name the text fields with --fields, e.g. --fields {','.join(_string_keys(first)) or 'text'}",
            ) from None
    elif format not in FORMATS:
        raise LmtuneError(f"unknown data format '{format}'", hint=f"use one of {', '.join(FORMATS)}")
    template = "{instruction}\n\n{input}" if format == "instruction" else None
    examples = normalize(records, format=format, columns=columns, prompt_template=template)
    whole = [Doc(example_text(ex), ex.source, ex.line) for ex in examples]
    if examples and isinstance(examples[0], TextExample):
        return RecordTexts(whole, None, format)  # raw text is all input: the input side adds nothing
    return RecordTexts(whole, [Doc(example_input(ex), ex.source, ex.line) for ex in examples], format)


def _string_keys(record: Record) -> list[str]:
    """The record's two longest string fields, in record order: likely the text (not an id or a label)."""
    strings = [key for key, value in record.data.items() if isinstance(value, str)]
    longest = sorted(strings, key=lambda key: -len(record.data[key]))[:2]
    return [key for key in strings if key in longest]


def _joined(record: Record, fields: Sequence[str]) -> str:
    parts = []
    for name in fields:
        if name not in record.data:
            problem = f"missing (the record has keys {sorted(record.data)})"
            raise DataError(record.source, record.line, name, problem, hint="name fields every record has in --fields")
        value = record.data[name]
        parts.append(value if isinstance(value, str) else "" if value is None else str(value))
    return "\n\n".join(parts)


# --- similarity ----------------------------------------------------------------------------------

_ASCII_KEPT = set(string.ascii_letters + string.digits + "_" + string.whitespace)
_ASCII_PUNCT_TO_SPACE = bytes.maketrans(
    bytes(range(128)), bytes(c if chr(c) in _ASCII_KEPT else 32 for c in range(128))
)


def normalized(text: str) -> str:
    """``normalize_text(text)``, about ten times faster for ASCII text, which most training data is.

    The leakage check before every training run normalises each example twice (whole and input side);
    the regular expressions took 0.3 s per 10k examples of 500 characters, this takes 0.04 s. For ASCII,
    NFKC changes nothing and casefold is lower, so a byte translation does the same work in C.
    """
    if text.isascii():
        return " ".join(text.encode("ascii").translate(_ASCII_PUNCT_TO_SPACE).decode("ascii").lower().split())
    return normalize_text(text)


def exact_key(text: str) -> str:
    """Two texts are exact duplicates when these keys are equal."""
    return hashlib.sha1(normalized(text).encode("utf-8")).hexdigest()


def shingle_set(text: str, kind: Shingles = "word", size: int | None = None) -> frozenset[str]:
    """The shingles of the normalised text: character ``size``-grams, or word n-grams for n = 1..``size``.

    A text shorter than one character shingle is its own single shingle; an empty text is ``{""}``.
    """
    size = size or SHINGLE_SIZES[kind]
    norm = normalized(text)
    if kind == "char":
        return frozenset(norm[i : i + size] for i in range(max(1, len(norm) - size + 1)))
    if kind != "word":
        raise LmtuneError(f"unknown shingle kind {kind!r}", hint="use 'word' or 'char'")
    words = norm.split()
    grams = set(words)
    for n in range(2, size + 1):  # zip and map join in C: a megabyte field is a million words
        grams.update(map(" ".join, zip(*(words[i:] for i in range(n)), strict=False)))  # shifted copies: shorter
    return frozenset(grams) or frozenset({""})


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    common = len(a & b)  # iterates the smaller set; building the union would copy the larger one
    return common / (len(a) + len(b) - common)


def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows) that propose a pair at the threshold with probability >= 99.9%.

    datasketch's own choice balances false positives against false negatives, which misses about half of
    the pairs that sit right at the threshold. A false positive here only costs one exact Jaccard, so we
    take the most rows per band (fewest spurious candidates) that still keeps recall at the threshold.
    """
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= _LSH_RECALL:
            best = (bands, rows)
    return best


def minhashes(shingles: Iterable[frozenset[str]], *, total: int | None = None) -> list[MinHash]:
    """One MinHash per shingle set, computed in bulk (datasketch reuses the permutations across sets)."""
    from datasketch import MinHash  # deferred: datasketch takes 0.4 s to import; exact checks do not need it

    encoded = ([s.encode("utf-8") for s in group] for group in shingles)
    progress = tqdm(encoded, total=total, desc="minhash", unit="doc", disable=None, leave=False)
    return MinHash.bulk(progress, num_perm=NUM_PERM, seed=SEED)


def check_threshold(threshold: float, option: str) -> None:
    if not 0 < threshold <= 1:
        raise LmtuneError(
            f"{option} must be a similarity between 0 and 1, got {threshold}", hint="e.g. 0.85 (1 = identical)"
        )


def similar_pairs(
    shingles: Sequence[frozenset[str]], threshold: float, keys: Sequence[Any] | None = None
) -> dict[int, list[tuple[int, float]]]:
    """For every doc index i: the earlier docs j < i whose exact Jaccard with i is >= ``threshold``.

    Docs whose normalised text is empty have nothing to compare and are left out. ``keys`` lets a caller
    skip pairs: docs with equal keys (e.g. in the same split) are never paired.

    Two sets of sizes m <= n have a Jaccard of at most m / n, so a doc with no other doc near its size
    cannot reach the threshold and is not hashed at all: a 5 MB line (a million shingles) took 2.7 s of
    MinHash for nothing. When few docs are left, every pair of them is compared exactly, which is faster
    than MinHash + LSH there and needs neither (datasketch's LSH imports scipy: 0.4-1.4 s).
    """
    check_threshold(threshold, "the near-duplicate threshold")
    candidates = _size_neighbours(shingles, threshold)
    if len(candidates) <= _ALL_PAIRS:
        return _all_pairs(shingles, candidates, threshold, keys)
    return _lsh_pairs(shingles, candidates, threshold, keys)


_ALL_PAIRS = 64  # up to this many docs (2,016 pairs, most ruled out by size), exact comparison beats MinHash


def _size_neighbours(shingles: Sequence[frozenset[str]], threshold: float) -> list[int]:
    """The non-empty docs that have another non-empty doc within the size ratio ``threshold``, in order."""
    sized = sorted((len(group), i) for i, group in enumerate(shingles) if group != frozenset({""}))
    keep = set()
    for k, (size, i) in enumerate(sized):
        before = k > 0 and sized[k - 1][0] >= threshold * size
        after = k + 1 < len(sized) and size >= threshold * sized[k + 1][0]
        if before or after:
            keep.add(i)
    return sorted(keep)


def _all_pairs(
    shingles: Sequence[frozenset[str]], docs: Sequence[int], threshold: float, keys: Sequence[Any] | None
) -> dict[int, list[tuple[int, float]]]:
    found: dict[int, list[tuple[int, float]]] = {}
    for k, i in enumerate(docs):
        for j in docs[:k]:
            if keys is not None and keys[i] == keys[j]:
                continue
            small, large = sorted((len(shingles[i]), len(shingles[j])))
            if small < threshold * large:
                continue
            similarity = jaccard(shingles[i], shingles[j])
            if similarity >= threshold:
                found.setdefault(i, []).append((j, similarity))
    return found


def _lsh_pairs(
    shingles: Sequence[frozenset[str]], docs: Sequence[int], threshold: float, keys: Sequence[Any] | None
) -> dict[int, list[tuple[int, float]]]:
    from datasketch import MinHashLSH

    bands, rows = lsh_params(threshold)
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, params=(bands, rows))
    hashes = dict(zip(docs, minhashes((shingles[i] for i in docs), total=len(docs)), strict=True))
    found: dict[int, list[tuple[int, float]]] = {}
    for i in docs:
        mh = hashes[i]
        for j in lsh.query(mh):
            if keys is not None and keys[i] == keys[j]:
                continue
            # LSH at a low threshold proposes many far pairs; the MinHash estimate (sd <= 0.045 with 128
            # permutations) drops them before the exact, costlier set comparison. 0.25 below is > 5 sd.
            if mh.jaccard(hashes[j]) < threshold - 0.25:
                continue
            similarity = jaccard(shingles[i], shingles[j])
            if similarity >= threshold:
                found.setdefault(i, []).append((j, similarity))
        lsh.insert(i, mh, check_duplication=False)
    return found


# --- duplicates within one file ------------------------------------------------------------------


@dataclass(frozen=True)
class Duplicate:
    """``doc`` repeats ``of`` (an earlier, kept doc); ``similarity`` is 1.0 for exact duplicates."""

    kind: Literal["exact", "near"]
    doc: Doc
    of: Doc
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "similarity": round(self.similarity, 4),
            "source": self.doc.source,
            "line": self.doc.line,
            "of": {"source": self.of.source, "line": self.of.line},
        }


def find_duplicates(
    docs: Sequence[Doc], *, near: float | None = DEFAULT_NEAR, shingles: Shingles = "word", size: int | None = None
) -> list[Duplicate]:
    """The docs to drop so that no two kept docs are duplicates; the first of each group is kept.

    A doc is dropped when it repeats a *kept* earlier doc. Near duplicates are not chained: if B is close to
    A and C is close to B but not to A, B is dropped and C is kept, since C is not a copy of anything kept.
    ``near=None`` finds exact duplicates only.
    """
    duplicates: list[Duplicate] = []
    first: dict[str, int] = {}
    unique: list[int] = []  # indices of docs that are not exact copies, in order
    for index, doc in enumerate(docs):
        key = exact_key(doc.text)
        if key in first:
            duplicates.append(Duplicate("exact", doc, docs[first[key]], 1.0))
        else:
            first[key] = index
            unique.append(index)
    if near is None or len(unique) < 2:
        return duplicates
    sets = [shingle_set(docs[i].text, shingles, size) for i in unique]
    pairs = similar_pairs(sets, near)
    dropped: set[int] = set()
    for k in range(len(unique)):
        matches = [(j, sim) for j, sim in pairs.get(k, []) if j not in dropped]
        if matches:
            j, sim = max(matches, key=lambda m: (m[1], -m[0]))  # the most similar kept doc; the earliest on a tie
            dropped.add(k)
            duplicates.append(Duplicate("near", docs[unique[k]], docs[unique[j]], sim))
    return sorted(duplicates, key=lambda d: (d.doc.source, d.doc.line))


@dataclass(frozen=True)
class DedupResult:
    source: str
    out: str
    records: int
    kept: int
    duplicates: list[Duplicate]
    sha256: str
    seconds: float

    def counts(self) -> dict[str, int]:
        return {kind: sum(d.kind == kind for d in self.duplicates) for kind in ("exact", "near")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "out": self.out,
            "records": self.records,
            "kept": self.kept,
            "removed": self.counts(),
            "duplicates": [d.to_dict() for d in self.duplicates],
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
        }


def dedup_file(
    source: str,
    out: str,
    *,
    near: float | None = DEFAULT_NEAR,
    fields: Sequence[str] | None = None,
    format: str = "auto",
    shingles: Shingles = "word",
    size: int | None = None,
    overwrite: bool = False,
) -> DedupResult:
    """Write the records of ``source`` without their duplicates to ``out`` (format by suffix), unchanged.

    ``near=None`` removes exact duplicates only. Refuses to replace ``out`` unless ``overwrite``, and never
    writes over ``source`` itself (the duplicates would be lost for good).
    """
    started = time.perf_counter()
    out_path = Path(out)
    if Path(source).is_file() and out_path.resolve() == Path(source).resolve():
        raise LmtuneError(f"--out {out} is the input file", hint="write the deduplicated records to a new file")
    if out_path.exists() and not overwrite:
        raise LmtuneError(f"{out} already exists", hint="choose another --out, or pass --overwrite to replace it")
    if near is not None:
        check_threshold(near, "--near")
    records = load_records(source)
    texts = record_docs(records, fields=fields, format=format)
    duplicates = find_duplicates(texts.whole, near=near, shingles=shingles, size=size)
    drop = {(d.doc.source, d.doc.line) for d in duplicates}
    kept = [r.data for r in records if (r.source, r.line) not in drop]
    sha = write_records(out_path, kept)
    return DedupResult(source, str(out_path), len(records), len(kept), duplicates, sha, time.perf_counter() - started)
