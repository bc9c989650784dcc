"""Token-classification (NER) data: CoNLL files and records of `tokens` + `tags`, checked tag by tag.

A CoNLL file (`.conll`, `.iob`, `.bio`) has one token per line with its tag in the last whitespace-separated
column (CoNLL-2003 keeps part-of-speech and chunk tags in the columns between); blank lines end sentences and
`-DOCSTART-` lines are document markers, skipped. Each sentence becomes one record `{"tokens": [...], "tags":
[...]}` whose line is that of its first token, so token i of a sentence sits on line `record.line + i` and every
problem can name the exact line to fix. JSONL/JSON/Parquet records give the same two lists (renamed through
data.columns: `{tokens: words, tags: ner_tags}`).

Tags follow the BIO family that seqeval's default (conlleval) mode reads: `O`, or `B-`/`I-` (IOB1/IOB2) and
`E-`/`S-` (IOBES) before an entity type. `I-X` after `O` or after another type is accepted: IOB1 data (the
original CoNLL-2003) starts entities that way, and seqeval's default mode reads it as the start of an entity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmtune.data.types import Record, json_type
from lmtune.errors import DataError, LmtuneError

CONLL_SUFFIXES = (".conll", ".iob", ".bio")
DOCSTART = "-DOCSTART-"
TAG_PREFIXES = ("B", "I", "E", "S")
OUTSIDE = "O"


@dataclass(frozen=True)
class TokensExample:
    """A sentence as words and one tag per word (task token_classification)."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    source: str
    line: int

    @property
    def text(self) -> str:
        """The sentence as plain text (words joined by spaces): what tokenization and the data checks read."""
        return " ".join(self.tokens)


def is_conll(source: str) -> bool:
    return Path(source).suffix.lower() in CONLL_SUFFIXES


def token_line(example_or_record: TokensExample | Record, index: int) -> int:
    """The 1-based line of token `index`: its own line in a CoNLL file, the record's line otherwise."""
    line = example_or_record.line
    return line + index if is_conll(example_or_record.source) else line


def parse_conll(text: str, source: str, skipped: list[DataError] | None = None) -> list[Record]:
    """Every sentence of a CoNLL text as a `{"tokens", "tags"}` record (line: its first token's line).

    A line with a single column (a token without a tag, or a tag without a token) is an error naming its line;
    all of them are reported in one error. Given `skipped`, they are added to it instead and their sentences
    left out, so `lmtune data check` lists them with everything else.
    """
    records: list[Record] = []
    problems: list[DataError] = []
    tokens: list[str] = []
    tags: list[str] = []
    start, broken = 0, False

    def flush() -> None:
        nonlocal start, broken
        if tokens and not broken:
            records.append(Record({"tokens": list(tokens), "tags": list(tags)}, source, start))
        tokens.clear(), tags.clear()
        broken = False

    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.split()[0] == DOCSTART:
            flush()
            continue
        if not tokens and not broken:
            start = number
        parts = line.split()
        if len(parts) < 2:
            problems.append(
                DataError(
                    source,
                    number,
                    None,
                    f"one column ({line!r}): a CoNLL line is a token and its tag (in the last column)",
                    hint="separate token and tag with a space or a tab; end a sentence with a blank line",
                )
            )
            broken = True
            continue
        tokens.append(parts[0])
        tags.append(parts[-1])
    flush()
    if problems and skipped is None:
        raise problems_error(problems)
    if skipped is not None:
        skipped.extend(problems)
    return records


def problems_error(problems: Sequence[DataError], max_errors: int = 20) -> LmtuneError:
    count = len(problems)
    lines = [f"{count} problem{'s' if count != 1 else ''} in {problems[0].source}:"]
    lines += [f"  {p}" for p in problems[:max_errors]]
    if count > max_errors:
        lines.append(f"  ... and {count - max_errors} more")
    return LmtuneError("\n".join(lines), hint=problems[0].hint or "fix these lines")


def bio_problem(tag: str) -> str | None:
    """Why `tag` is not a tag of the BIO family (None when it is one)."""
    if tag == OUTSIDE:
        return None
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in TAG_PREFIXES and kind.strip():
        return None
    return f"{tag!r} is not a BIO tag: use O, or B-TYPE / I-TYPE (IOBES's E-TYPE / S-TYPE also), e.g. B-PER, I-PER"


def convert_tokens(record: Record, columns: Mapping[str, str], problems: list[DataError]) -> TokensExample | None:
    """One record as a TokensExample, or None after adding every problem (file, line, field) to `problems`."""
    conll = is_conll(record.source)  # a CoNLL record has the canonical keys whatever data.columns maps
    names = {key: key if conll else columns.get(key, key) for key in ("tokens", "tags")}
    before = len(problems)
    values = {key: _strings(record, key, names[key], problems) for key in names}
    tokens, tags = values["tokens"], values["tags"]
    if tokens is None or tags is None:
        return None
    if len(tokens) != len(tags):
        problems.append(
            DataError(
                record.source,
                record.line,
                names["tags"],
                f"has {len(tags)} tags for {len(tokens)} tokens: give one tag per token",
            )
        )
        return None
    for i, tag in enumerate(tags):
        problem = bio_problem(tag)
        if problem is not None:
            problems.append(DataError(record.source, token_line(record, i), f"{names['tags']}[{i}]", problem))
    if len(problems) > before:
        return None
    return TokensExample(tuple(tokens), tuple(tags), record.source, record.line)


def _strings(record: Record, key: str, field: str, problems: list[DataError]) -> list[str] | None:
    """A non-empty list of non-empty strings (the tokens or the tags of a sentence)."""

    def report(name: str, problem: str, line: int = record.line, hint: str | None = None) -> None:
        problems.append(DataError(record.source, line, name, problem, hint=hint))

    if field not in record.data:
        report(field, f"missing (the record has keys {sorted(record.data)})", hint="map it with data.columns")
        return None
    value = record.data[field]
    if not isinstance(value, list):
        report(field, f"must be a list of strings, got {json_type(value)}")
        return None
    if not value:
        report(field, "is empty (a sentence needs at least one token)")
        return None
    ok = True
    for i, item in enumerate(value):
        if isinstance(item, str) and item.strip():
            continue
        ok = False
        if isinstance(item, int) and not isinstance(item, bool) and key == "tags":
            problem = "is an integer id; tags must be names such as B-PER (write each id's name, e.g. from the "
            problem += "dataset's ClassLabel names)"
        elif isinstance(item, str):
            problem = "is empty"
        else:
            problem = f"must be a string, got {json_type(item)}"
        report(f"{field}[{i}]", problem, token_line(record, i))
    return [str(item) for item in value] if ok else None
