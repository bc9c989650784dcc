"""Load raw training records from JSONL, JSON, CSV/TSV, Parquet, a saved dataset directory or the hub.

We parse JSONL, JSON and CSV/TSV ourselves instead of through ``datasets`` because ``datasets`` reports a
bad record as a failure to build the whole dataset, without the file's line number, and its records do not
remember where they came from. Our reader keeps ``file:line`` on every record, so both the problems found
here and the record-shape problems found later (``formats.py``) point at the line to fix.
Parquet and ``datasets`` directories have no lines, so their records carry ``row index + 1`` instead.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from lmtune.data import strictjson
from lmtune.data.conll import parse_conll
from lmtune.data.types import Record, json_type
from lmtune.errors import DataError, LmtuneError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".conll", ".iob", ".bio")  # CoNLL: lmtune.data.conll

_JSON_WHITESPACE = " \t\n\r"
_JSONL_HINT = "each line must be one JSON object (a pretty-printed JSON array belongs in a .json file)"


def load_records(
    source: str, *, split: str = "train", subset: str | None = None, skipped: list[DataError] | None = None
) -> list[Record]:
    """Load every record of ``source``: a data file, a ``save_to_disk`` directory or a hub dataset name.

    ``split`` picks the split of a saved ``DatasetDict`` or of a hub dataset; ``subset`` is the hub
    dataset's configuration name (e.g. ``"main"`` for gsm8k). Given a ``skipped`` list, a JSONL file's
    unreadable lines (bad JSON, bad UTF-8, not an object) are added to it and skipped instead of raised, so
    `lmtune data check` reports them all; the other formats have no independent lines to skip to.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        records = _load_saved_dataset(path, source, split)
    elif path.is_file():
        suffix = path.suffix.lower()
        conll_txt = suffix == ".txt" and _looks_like_conll(path)  # CoNLL files are often named .txt (CoNLL-2003's are)
        if suffix not in FILE_SUFFIXES and not conll_txt:
            txt = "; a .txt file is read when it is CoNLL (a token and its tag per line) " if suffix == ".txt" else ""
            raise LmtuneError(
                f"unsupported data file type '{path.suffix or '(none)'}': {source}",
                hint=f"use one of {', '.join(FILE_SUFFIXES)}, or a directory saved with datasets' save_to_disk{txt}",
            )
        if suffix in (".conll", ".iob", ".bio") or conll_txt:
            records = parse_conll(_read_text(path, source), source, skipped)
        elif suffix == ".parquet":
            records = _load_parquet(path, source)
        elif suffix == ".jsonl" and skipped is not None:
            records = _parse_jsonl_lenient(path.read_bytes(), source, skipped)
        else:
            text = _read_text(path, source)
            if suffix == ".jsonl":
                records = _parse_jsonl(text, source)
            elif suffix == ".json":
                records = _parse_json(text, source)
            else:
                records = _parse_csv(text, source, delimiter="\t" if suffix == ".tsv" else ",")
    elif looks_like_path(source):
        raise LmtuneError(
            f"data file not found: {source}",
            hint=f"check the path (relative paths are resolved from {Path.cwd()})",
        )
    else:
        records = _load_hub(source, subset, split)
    if not records:
        raise DataError(source, None, None, "no records found (the file or split is empty)")
    return records


_TAG = re.compile(r"^(O|[BIESLU]-\S+)$")


def _looks_like_conll(path: Path) -> bool:
    """Whether a .txt file reads as CoNLL: its first 20 token lines end in a BIO/BIOES tag (O, B-PER, ...)."""
    with path.open("rb") as f:
        head = f.read(1 << 16).decode("utf-8", errors="replace").split("\n")[:-1] or [""]
    lines = [ln.split() for ln in head if ln.strip() and not ln.startswith("-DOCSTART-")][:20]
    return bool(lines) and all(len(cols) >= 2 and _TAG.match(cols[-1]) for cols in lines)


def looks_like_path(source: str) -> bool:
    """A missing file (or model directory) should say "not found", not "could not download from the hub".

    Hub names are ``name`` or ``owner/name`` and may contain dots (``teknium/OpenHermes-2.5``), so only a
    data-file suffix or an unmistakable path shape marks ``source`` as a local path.
    """
    if Path(source).suffix.lower() in FILE_SUFFIXES:
        return True
    return source.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in source or source.count("/") > 1


def _read_text(path: Path, source: str) -> str:
    """Decode the whole file as UTF-8, naming the line of the first bad byte (a BOM is dropped)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(
            source,
            line,
            None,
            f"not valid UTF-8 (byte 0x{raw[error.start]:02x})",
            hint="re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None
    return text.removeprefix("\ufeff")


def _parse_jsonl(text: str, source: str) -> list[Record]:
    # Split on "\n" only: str.splitlines() would also break on U+2028 etc., which JSON allows inside strings.
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = strictjson.loads(line, source, number)
        except json.JSONDecodeError as error:
            problem = f"invalid JSON: {error.msg} (column {error.colno})"
            raise DataError(source, number, None, problem, hint=_JSONL_HINT) from None
        if not isinstance(value, dict):
            problem = f"expected a JSON object, got {json_type(value)}"
            raise DataError(source, number, None, problem, hint=_JSONL_HINT)
        records.append(Record(value, source, number))
    return records


def _parse_jsonl_lenient(raw: bytes, source: str, skipped: list[DataError]) -> list[Record]:
    records = []
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as error:
            problem = f"not valid UTF-8 (byte 0x{line_bytes[error.start]:02x} at column {error.start + 1})"
            skipped.append(DataError(source, number, None, problem, hint="re-save the file as UTF-8"))
            continue
        if number == 1:
            line = line.removeprefix("\ufeff")
        try:
            parsed = _parse_jsonl(line, source)
        except DataError as error:
            skipped.append(DataError(source, number, error.field, error.problem, hint=error.hint))
            continue
        records.extend(Record(record.data, source, number) for record in parsed)
    return records


def _parse_json(text: str, source: str) -> list[Record]:
    """A JSON array of objects, each record tagged with the line its element starts on.

    ``json.loads`` would give us the objects but not where they are, so we step through the array
    with ``JSONDecoder.raw_decode``. A ``.json`` file that does not start with ``[`` is read as JSONL,
    which many tools write under a ``.json`` name.
    """
    start = _skip_whitespace(text, 0)
    if start == len(text):
        return []
    if text[start] != "[":
        return _parse_jsonl_or_object(text, source)
    records: list[Record] = []
    line, counted_to = 1, 0
    pos = _skip_whitespace(text, start + 1)
    if pos < len(text) and text[pos] == "]":
        return _expect_end(text, pos + 1, source, records)
    while True:
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        try:
            value, end = strictjson.raw_decode(text, pos, source, line)
        except json.JSONDecodeError as error:
            problem = f"invalid JSON: {error.msg} (column {error.colno})"
            raise DataError(
                source, error.lineno, None, problem, hint="the file must be one JSON array of objects"
            ) from None
        if not isinstance(value, dict):
            problem = f"array element {len(records)} is {json_type(value)}, expected an object"
            raise DataError(source, line, None, problem, hint="the file must be one JSON array of objects")
        records.append(Record(value, source, line))
        pos = _skip_whitespace(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_whitespace(text, pos + 1)
        elif pos < len(text) and text[pos] == "]":
            return _expect_end(text, pos + 1, source, records)
        else:
            bad_line = text.count("\n", 0, pos) + 1
            found = "the end of the file" if pos == len(text) else repr(text[pos])
            raise DataError(
                source, bad_line, None, f"invalid JSON: expected ',' or ']' after an element, found {found}"
            )


def _parse_jsonl_or_object(text: str, source: str) -> list[Record]:
    """JSONL in a .json file, or explain that a single top-level object is not a list of records (even when it
    would read as a one-line JSONL file: a .json file of one object is far more often a wrapper or a mistake)."""
    try:
        whole = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        whole = None
    if not isinstance(whole, dict):
        return _parse_jsonl(text, source)  # several lines of objects; it names a bad line, if any
    lists = [key for key, value in whole.items() if isinstance(value, list)]
    hint = f"the records may be the list under '{lists[0]}'; " if lists else ""
    raise DataError(
        source,
        1,
        None,
        f"the file holds one JSON object (keys: {', '.join(map(str, whole)) or 'none'}), not a list of records",
        hint=hint + "write a JSON array of objects, or one object per line in a .jsonl file",
    )


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _JSON_WHITESPACE:
        pos += 1
    return pos


def _expect_end(text: str, pos: int, source: str, records: list[Record]) -> list[Record]:
    pos = _skip_whitespace(text, pos)
    if pos != len(text):
        line = text.count("\n", 0, pos) + 1
        raise DataError(source, line, None, "unexpected content after the closing ']' of the JSON array")
    return records


def _parse_csv(text: str, source: str, *, delimiter: str) -> list[Record]:
    """CSV/TSV with a header row; a record's line is the file line its row starts on (header is line 1).

    ``strict=True`` turns a stray or unclosed quote into an error instead of silently merging rows.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[Record] = []
    header: list[str] | None = None
    kind = "TSV" if delimiter == "\t" else "CSV"
    while True:
        row_line = reader.line_num + 1  # a quoted cell may span lines, so read the start before the row
        try:
            row = next(reader)
        except StopIteration:
            return records
        except csv.Error as error:
            problem = f"malformed {kind} row: {error}"
            hint = 'quote cells that contain the delimiter, quotes or newlines, and double quotes inside them ("")'
            raise DataError(source, row_line, None, problem, hint=hint) from None
        if not row:
            continue  # blank line
        if header is None:
            duplicates = sorted({name for name in row if row.count(name) > 1})
            if duplicates:
                raise DataError(source, row_line, None, f"duplicate column names in the header: {duplicates}")
            header = row
            continue
        if len(row) != len(header):
            more_or_fewer = "more" if len(row) > len(header) else "fewer"
            problem = f"row has {len(row)} fields, {more_or_fewer} than the {len(header)} columns of the header"
            hint = f"quote cells that contain the delimiter ({delimiter!r}) or check for a missing/extra column"
            raise DataError(source, row_line, None, problem, hint=hint)
        records.append(Record(dict(zip(header, row, strict=True)), source, row_line))


def _load_parquet(path: Path, source: str) -> list[Record]:
    import pyarrow.parquet as pq  # deferred: pyarrow is heavy and only Parquet needs it here

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several unrelated types for a damaged file
        raise LmtuneError(f"could not read Parquet file {source}: {_one_line(error)}") from None
    return [Record(row, source, index + 1) for index, row in enumerate(rows)]


def _load_saved_dataset(path: Path, source: str, split: str) -> list[Record]:
    import datasets  # deferred: importing datasets costs about half a second

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise LmtuneError(
            f"directory is not a dataset saved with datasets' save_to_disk: {source}",
            hint="point data at a file (.jsonl, .json, .csv, .tsv, .parquet) or at a save_to_disk directory",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise LmtuneError(
                f"split '{split}' not found in {source}; available splits: {', '.join(loaded) or 'none'}",
                hint="set the split to one of the available ones",
            )
        loaded = loaded[split]
    elif split != "train":
        # A plain Dataset has no splits; handing it back for "validation" too would train and test on it.
        raise LmtuneError(
            f"{source} holds a single dataset without splits, but split '{split}' was asked for",
            hint="save a DatasetDict with that split, or carve a validation fraction from the training data",
        )
    return [Record(row, source, index + 1) for index, row in enumerate(loaded.to_list())]


def _load_hub(source: str, subset: str | None, split: str) -> list[Record]:
    import datasets  # deferred: importing datasets costs about half a second

    try:
        loaded = datasets.load_dataset(source, subset, split=split)
        rows = loaded.to_list()
    except Exception as error:  # network, auth, missing config or split: all mean "cannot use this source"
        raise LmtuneError(
            f"could not load dataset '{source}' (subset {subset!r}, split {split!r}) from the Hugging Face hub: "
            f"{_one_line(error)}",
            hint="check the dataset name, subset and split, and the network connection; or use a local file "
            "(.jsonl, .json, .csv, .tsv, .parquet)",
        ) from None
    return [Record(row, source, index + 1) for index, row in enumerate(rows)]


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
