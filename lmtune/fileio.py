"""Files that are either the old version or the complete new one: written beside the target, then renamed.

Run directories, split files and reports are read by later runs and fingerprinted by manifests, so a crash or
Ctrl-C must never leave half a file. `os.replace` is atomic within a filesystem, hence the temp file in the
target's own directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> str:
    """Replace ``path`` with ``data`` in one step; returns the sha256 of ``data``.

    mkstemp creates the temp file private (0600); it gets the mode a plain ``open`` would give (or the mode of
    the file it replaces), so reports and data files stay readable as users expect.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def atomic_write_text(path: str | Path, text: str) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> str:
    return atomic_write_text(path, dumps_json(obj, indent=2) + "\n")


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None: JSON has no such numbers, and Python's bare `NaN`
    literal makes a file other readers (browsers, jq, pandas in strict mode) refuse."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Standard JSON (no NaN/Infinity literals: non-finite floats become null)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Fill the yielded temp directory; on success it replaces ``final`` whole, on any error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file on disk, read in chunks (data files can be larger than memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    current = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(current)
    return current
