"""Leakage between splits: evaluation examples that the model also sees (or nearly sees) in training.

A held-out score means nothing when the held-out examples are in the training data. Every doc of a later
split (validation, test, a benchmark) is compared with every earlier split, in three ways:

- ``exact``: the same normalised text (sha1), O(n);
- ``near``: MinHash + LSH candidates verified by the exact Jaccard of the shingle sets (as in dedup.py);
- ``ngram``: a shared run of ``n`` normalised words (13 by default, the GPT-3 contamination test), which
  catches a copied passage inside otherwise different examples.

The input side (prompt, or system + user turns) is compared too, as ``input-exact`` and ``input-near``: the
same question with another answer still tells the model the test question. A later doc gets at most one
finding per earlier split, the strongest in the order of ``KINDS``, so counts read as "examples leaked".
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.data.dedup import (
    Shingles,
    check_threshold,
    exact_key,
    normalized,
    record_docs,
    shingle_set,
    similar_pairs,
)
from lmtune.data.formats import Example, TextExample
from lmtune.data.load import load_records
from lmtune.data.text import Doc, example_input, example_text
from lmtune.errors import LmtuneError

KINDS = ("exact", "input-exact", "near", "input-near", "ngram")
DEFAULT_NEAR = 0.8
DEFAULT_NGRAM = 13
SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Where:
    split: str
    source: str
    line: int

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "source": self.source, "line": self.line}


@dataclass(frozen=True)
class Leak:
    """Doc ``b`` (of a later split) leaks from doc ``a``; ``similarity`` is 1.0 for exact matches, the exact
    Jaccard for near ones, and for ``ngram`` the share of the smaller doc's n-grams found in the other."""

    kind: str
    similarity: float
    a: Where
    b: Where
    shared_ngrams: int | None = None
    example: str | None = None  # one shared n-gram, as normalised text

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "kind": self.kind,
            "similarity": round(self.similarity, 4),
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
        }
        if self.shared_ngrams is not None:
            result.update(shared_ngrams=self.shared_ngrams, example=self.example)
        return result


@dataclass(frozen=True)
class Split:
    """One split's docs; ``inputs`` (aligned with ``docs``) is None when the shape has no separate input."""

    name: str
    docs: Sequence[Doc]
    inputs: Sequence[Doc] | None = None


def find_leaks(
    splits: Sequence[Split],
    *,
    near: float | None = DEFAULT_NEAR,
    ngram: int | None = DEFAULT_NGRAM,
    shingles: Shingles = "word",
    size: int | None = None,
) -> list[Leak]:
    """Every leak from an earlier split into a later one; ``near=None`` / ``ngram=None`` skip those checks."""
    flagged: set[tuple[int, int, int]] = set()  # (earlier split, later split, later doc): already reported
    leaks = _exact(splits, "exact", flagged)
    leaks += _exact(splits, "input-exact", flagged)
    if near is not None:
        leaks += _near(splits, "near", near, flagged, shingles, size)
        leaks += _near(splits, "input-near", near, flagged, shingles, size)
    if ngram:
        leaks += _ngram(splits, ngram, flagged)
    order = {split.name: index for index, split in enumerate(splits)}
    return sorted(leaks, key=lambda k: (KINDS.index(k.kind), order[k.a.split], order[k.b.split], k.b.line))


def cheap_leaks(train: Sequence[Doc | Example], validation: Sequence[Doc | Example]) -> list[Leak]:
    """Exact normalised matches of whole texts and of input sides only: O(n), milliseconds for 10k examples.

    Cheap enough to run before every training run. Examples give both sides; plain Docs give whole texts.
    """
    return find_leaks([_split("train", train), _split("validation", validation)], near=None, ngram=None)


def _split(name: str, items: Sequence[Doc | Example]) -> Split:
    if all(isinstance(item, Doc) for item in items):
        return Split(name, [item for item in items if isinstance(item, Doc)])
    examples = [item for item in items if not isinstance(item, Doc)]
    docs = [Doc(example_text(ex), ex.source, ex.line) for ex in examples]
    if any(isinstance(ex, TextExample) for ex in examples):
        return Split(name, docs)
    return Split(name, docs, [Doc(example_input(ex), ex.source, ex.line) for ex in examples])


def _side(split: Split, kind: str) -> Sequence[Doc]:
    """The docs compared for ``kind``: input sides (none when the split has no separate input) or whole texts."""
    if kind.startswith("input-"):
        return split.inputs or []
    return split.docs


def _where(split: Split, doc: Doc) -> Where:
    return Where(split.name, doc.source, doc.line)


def _exact(splits: Sequence[Split], kind: str, flagged: set[tuple[int, int, int]]) -> list[Leak]:
    keys = [[exact_key(doc.text) for doc in _side(split, kind)] for split in splits]  # each text hashed once
    firsts = [{key: index for index, key in reversed(list(enumerate(split_keys)))} for split_keys in keys]
    leaks = []
    for b, split in enumerate(splits):
        for d, doc in enumerate(_side(split, kind)):
            for a in range(b):
                if keys[b][d] in firsts[a] and (a, b, d) not in flagged:
                    flagged.add((a, b, d))
                    other = _side(splits[a], kind)[firsts[a][keys[b][d]]]
                    leaks.append(Leak(kind, 1.0, _where(splits[a], other), _where(split, doc)))
    return leaks


def _near(
    splits: Sequence[Split],
    kind: str,
    threshold: float,
    flagged: set[tuple[int, int, int]],
    shingles: Shingles,
    size: int | None,
) -> list[Leak]:
    """The most similar doc of each earlier split for every later doc, if it reaches ``threshold``."""
    owners: list[tuple[int, int]] = []  # global index -> (split, doc)
    texts: list[str] = []
    for s, split in enumerate(splits):
        for d, doc in enumerate(_side(split, kind)):
            owners.append((s, d))
            texts.append(doc.text)
    if len({s for s, _ in owners}) < 2:
        return []
    sets = [shingle_set(text, shingles, size) for text in texts]
    pairs = similar_pairs(sets, threshold, keys=[s for s, _ in owners])
    leaks = []
    for i, matches in pairs.items():
        b, d = owners[i]
        best: dict[int, tuple[float, int]] = {}  # earlier split -> (similarity, -doc): earliest doc on a tie
        for j, similarity in matches:
            a, other = owners[j]
            best[a] = max(best.get(a, (-1.0, 0)), (similarity, -other))
        for a, (similarity, neg_other) in sorted(best.items()):
            if (a, b, d) in flagged:
                continue
            flagged.add((a, b, d))
            docs_a, docs_b = _side(splits[a], kind), _side(splits[b], kind)
            leaks.append(Leak(kind, similarity, _where(splits[a], docs_a[-neg_other]), _where(splits[b], docs_b[d])))
    return leaks


def word_ngrams(text: str, n: int) -> list[str]:
    """The distinct n-grams of the normalised words, in order of first appearance."""
    words = normalized(text).split()
    return list(dict.fromkeys(" ".join(words[i : i + n]) for i in range(len(words) - n + 1)))


def _template_cap(docs: int) -> int:
    """An n-gram in more docs than this is template text (a system prompt, an instruction), not a leak.

    A passage copied from a test set sits in a few training docs; boilerplate sits in a large share of them.
    """
    return max(10, docs // 100)


def _ngram(splits: Sequence[Split], n: int, flagged: set[tuple[int, int, int]]) -> list[Leak]:
    grams = [[word_ngrams(doc.text, n) for doc in split.docs] for split in splits]
    postings: list[dict[str, list[int]]] = []
    for per_doc in grams:
        index: dict[str, list[int]] = {}
        for d, doc_grams in enumerate(per_doc):
            for gram in doc_grams:
                index.setdefault(gram, []).append(d)
        cap = _template_cap(len(per_doc))
        postings.append({gram: docs for gram, docs in index.items() if len(docs) <= cap})
    leaks = []
    for b in range(1, len(splits)):
        for d, doc_grams in enumerate(grams[b]):
            for a in range(b):
                if (a, b, d) in flagged:
                    continue
                shared = [g for g in doc_grams if g in postings[a] and g in postings[b]]
                if not shared:
                    continue
                counts = Counter(other for g in shared for other in postings[a][g])
                other, count = max(counts.items(), key=lambda item: (item[1], -item[0]))
                example = next(g for g in shared if other in postings[a][g])
                coverage = count / min(len(grams[a][other]), len(doc_grams))
                flagged.add((a, b, d))
                where_a, where_b = _where(splits[a], splits[a].docs[other]), _where(splits[b], splits[b].docs[d])
                leaks.append(Leak("ngram", coverage, where_a, where_b, count, example))
    return leaks


# --- files ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeakageReport:
    splits: dict[str, dict[str, Any]]  # name -> {"source", "records"}
    leaks: list[Leak]
    seconds: float

    def counts(self) -> dict[str, int]:
        counts = {kind: sum(leak.kind == kind for leak in self.leaks) for kind in KINDS}
        return {**counts, "total": len(self.leaks)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "splits": self.splits,
            "leaks": [leak.to_dict() for leak in self.leaks],
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
        }


def split_names(files: Sequence[str]) -> list[str]:
    """train, validation, test, then each further file's stem (a benchmark reads as its own name)."""
    names: list[str] = []
    for index, source in enumerate(files):
        base = SPLIT_NAMES[index] if index < len(SPLIT_NAMES) else Path(source).stem or f"split{index + 1}"
        name, number = base, 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return names


def leakage_report(
    files: Sequence[str],
    *,
    near: float | None = DEFAULT_NEAR,
    ngram: int | None = DEFAULT_NGRAM,
    fields: Sequence[str] | None = None,
    format: str = "auto",
    shingles: Shingles = "word",
    size: int | None = None,
) -> LeakageReport:
    """Load ``files`` (train first, then validation, test, benchmarks) and find the leaks between them."""
    started = time.perf_counter()
    if len(files) < 2:
        raise LmtuneError("leakage needs at least two files (train and one held-out split)")
    if near is not None:
        check_threshold(near, "--near")
    if ngram is not None and ngram < 0:
        raise LmtuneError(f"--ngram must be a number of words (0 turns it off), got {ngram}", hint="e.g. 13")
    splits, info = [], {}
    for name, source in zip(split_names(files), files, strict=True):
        records = load_records(source)
        texts = record_docs(records, fields=fields, format=format)
        splits.append(Split(name, texts.whole, texts.inputs))
        info[name] = {"source": source, "records": len(records)}
    leaks = find_leaks(splits, near=near, ngram=ngram or None, shingles=shingles, size=size)
    return LeakageReport(info, leaks, time.perf_counter() - started)
