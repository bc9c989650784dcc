"""Write records back to a data file (.jsonl, .json, .csv, .tsv, chosen by suffix), atomically.

Split and dedup write files that later runs train on and that a manifest fingerprints, so a file is either
the old one or the complete new one: we write a temporary file beside it and ``os.replace`` it into place
(a crash or Ctrl-C never leaves half a file). The bytes are hashed as they are written, so the sha256 a
manifest records is the one of the file on disk. The output reads back with ``load_records``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.fileio import file_sha256, write_bytes_atomic

__all__ = ["WRITABLE_SUFFIXES", "file_sha256", "output_suffix", "render_records", "write_bytes_atomic", "write_records"]

WRITABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


def write_records(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> str:
    """Write ``rows`` to ``path`` in the format its suffix names; returns the file's sha256 (hex)."""
    return write_bytes_atomic(path, render_records(Path(path).suffix, rows))


def output_suffix(source: str) -> str:
    """The suffix to write records read from ``source`` with: its own when writable, else ``.jsonl``.

    Parquet files, saved datasets and hub names come back as JSONL, which keeps every value's type.
    """
    suffix = Path(source).suffix.lower()
    return suffix if suffix in WRITABLE_SUFFIXES and Path(source).is_file() else ".jsonl"


def render_records(suffix: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The bytes of a data file holding ``rows``, one record per line (JSON: one array element per line).

    One record per line keeps diffs readable and lets ``load_records`` point at a record's line.
    Values JSON cannot hold (dates from Parquet, say) are written as their ``str``.
    """
    suffix = suffix.lower()
    if suffix == ".jsonl":
        text = "".join(_json(row) + "\n" for row in rows)
    elif suffix == ".json":
        text = "[\n" + ",\n".join(_json(row) for row in rows) + "\n]\n" if rows else "[]\n"
    elif suffix in (".csv", ".tsv"):
        text = _delimited(rows, "\t" if suffix == ".tsv" else ",")
    else:
        raise LmtuneError(
            f"cannot write records to a '{suffix or '(no suffix)'}' file",
            hint=f"name the output file with one of {', '.join(WRITABLE_SUFFIXES)}",
        )
    return text.encode("utf-8")


def _json(row: Mapping[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


def _delimited(rows: Sequence[Mapping[str, Any]], delimiter: str) -> str:
    """CSV/TSV with a header of every key in first-seen order; a missing key is an empty cell.

    Strings are written as they are (CSV records read back unchanged); other values as JSON, so a list or
    a number survives the round trip as text rather than as Python's repr.
    """
    header = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(row.get(key)) for key in header])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
