"""The run directory: created once, never overwritten silently, and self-describing.

Layout of `runs/<name>/`:
  config.yaml      the resolved config            env.json      python, platform, library versions, device
  data.json        fingerprints + counts per split metrics.jsonl one JSON object per train log / evaluation
  checkpoints/     step-NNNNNN/ (see checkpoint)   final/        the tuned model (or adapter) + tokenizer
  base_model/      only for LoRA on a preset        summary.json  steps, tokens, time, losses
  .lock            the PID of the process writing the run, which holds a flock on the directory
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from lmtune.errors import EnvironmentFault, LmtuneError
from lmtune.fileio import atomic_write_json, atomic_write_text, dumps_json

LIBRARIES = (
    "lmtune",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "pydantic",
    "trl",
    "deepspeed",
)


LOCK = ".lock"  # the PID of the process writing the run (the lock itself is on the directory)


@dataclass
class _Held:
    fd: int  # the run directory, opened: the flock is on it, so no file is made in a directory we are refused
    created: bool  # this process made the directory: a run that fails before writing anything leaves none behind


# The run directories this process holds, by resolved path: a process never locks itself out (a notebook or a test
# that runs finetune again after an error in the same process), and the kernel frees them all when it exits.
_HELD: dict[Path, _Held] = {}


def lock_run_dir(path: Path) -> None:
    """Take the run directory for this process alone, for the rest of its run: an exclusive `flock` on it.

    A second `lmtune train` into the same directory is refused at once, naming the PID that holds it (written to
    `.lock` by `prepare_run_dir`). The kernel drops the lock when its process dies however it dies (kill -9
    included), so a stale `.lock` never blocks --resume. Only the main process of a distributed launch (RANK 0)
    locks; the others write nothing.
    """
    if os.environ.get("RANK", "0") != "0":
        return
    created = not path.exists()
    check_writable_dir(path)
    key = path.resolve()
    if key in _HELD:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        try:
            holder = (path / LOCK).read_text(encoding="utf-8").strip() or "unknown"
        except OSError:
            holder = "unknown"  # it has not written its PID yet
        raise LmtuneError(
            f"run directory {path} is in use by another lmtune process (PID {holder})",
            hint="wait for that run to finish (or stop it), or pick another --output-dir",
        ) from None
    if not _HELD:
        atexit.register(release_all)
    _HELD[key] = _Held(fd, created)


def release_run_dir(path: Path) -> None:
    """Give the run directory back; one this process created and wrote nothing into goes too."""
    held = _HELD.pop(path.resolve(), None)
    if held is None:
        return
    if held.created and path.is_dir() and {p.name for p in path.iterdir()} <= {LOCK}:
        (path / LOCK).unlink(missing_ok=True)
        path.rmdir()
    fcntl.flock(held.fd, fcntl.LOCK_UN)
    os.close(held.fd)


def release_all() -> None:
    """Release every run directory this process holds (the CLI on its way out, and at interpreter exit)."""
    for key in list(_HELD):
        release_run_dir(key)


def check_writable_dir(path: Path) -> None:
    """Create `path` if needed; a file in its place, or a directory we may not write, is a clear error."""
    if path.exists() and not path.is_dir():
        raise LmtuneError(
            f"--output-dir {path} is an existing file, not a directory",
            hint="pick another --output-dir (a run directory holds many files), or move that file away",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentFault(f"cannot create the run directory {path}: {e.strerror}", hint=_WRITABLE) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise EnvironmentFault(f"the run directory {path} is not writable (permission denied)", hint=_WRITABLE)


_WRITABLE = "pick an --output-dir you can write to, or fix the directory's permissions (chmod u+w)"


def disk_fault(e: OSError, path: Path, what: str, needed: int | None = None) -> EnvironmentFault | None:
    """The message for an OSError while writing the run directory that is about the machine, not lmtune: a full
    disk or a read-only file system (None for other errors, which keep their traceback)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        size = f" (it needs about {needed / 2**20:,.1f} MiB)" if needed else ""
        return EnvironmentFault(
            f"{path}: no space left on the device while writing the {what}{size}; the previous checkpoint is intact",
            hint="free some space (or delete old runs), then continue with --resume",
        )
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return EnvironmentFault(f"{path}: cannot write the {what}: {e.strerror}", hint=_WRITABLE)
    return None


@contextmanager
def disk_errors(path: Path, what: str, needed: int | None = None) -> Iterator[None]:
    """Turn a failure to write `what` under `path` that is about the machine, not lmtune (a full disk, a read-only
    file system), into an EnvironmentFault that says so (and how much space `what` needs); other errors pass.

    Writers report a full disk in their own ways (OSError ENOSPC, safetensors' SafetensorError, torch.save's
    RuntimeError), so besides the errno, a write that failed where less than `needed` bytes are free counts too.
    """
    try:
        yield
    except Exception as e:
        fault = _disk_fault(e, path, what, needed)
        if fault is None:
            raise
        raise fault from None


def _disk_fault(e: Exception, path: Path, what: str, needed: int | None) -> EnvironmentFault | None:
    code = e.errno if isinstance(e, OSError) else None
    size = f"; it needs about {needed / 2**20:,.1f} MiB" if needed else ""
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return EnvironmentFault(f"{path}: cannot write the {what}: {e.strerror}", hint=_WRITABLE)
    full = code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e) or "StorageFull" in str(e)
    if not full and needed is not None:
        target = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        full = shutil.disk_usage(target).free < needed
    if not full:
        return None
    return EnvironmentFault(
        f"{path}: the disk is full: the {what} could not be written{size}. Files written before it are intact "
        "(checkpoints are written whole or not at all, so the last one still loads)",
        hint="free some space (delete old runs or checkpoints, or lower train.keep_checkpoints), then continue "
        "with --resume",
    )


def check_run_dir(path: Path, *, resume: bool, overwrite: bool) -> bool:
    """Whether `path` must be emptied first; raises when we may not write there. Changes nothing, so every
    process of a distributed run reaches the same verdict before the main one acts on it."""
    used = path.is_dir() and any(p.name != LOCK for p in path.iterdir())
    if resume:
        if not used:
            raise LmtuneError(f"--resume: there is no run at {path} to resume", hint="start it without --resume")
        return False
    if used:
        if not overwrite:
            raise LmtuneError(
                f"run directory {path} already exists and is not empty",
                hint="continue it with --resume, replace it with --overwrite, or pick another --output-dir",
            )
        _check_deletable(path)
    return used


def prepare_run_dir(path: Path, *, resume: bool, overwrite: bool) -> Path:
    """Make sure we may write to `path`: a fresh run never lands in a used directory without --overwrite."""
    if check_run_dir(path, resume=resume, overwrite=overwrite):
        # Emptied, not replaced: the directory itself is what `lock_run_dir` holds.
        for entry in path.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    if path.resolve() in _HELD:
        atomic_write_text(path / LOCK, f"{os.getpid()}\n")  # for the message of a process refused the lock
    return path


# Entries of a run directory (a run that crashed early may hold only some of them, e.g. just base_model/).
_RUN_ENTRIES = {"config.yaml", "data.json", "env.json", "metrics.jsonl", "metrics.tmp", "summary.json", LOCK}
_RUN_ENTRIES |= {"checkpoints", "final", ".final.tmp", "base_model", ".base_model.tmp"}


def _check_deletable(path: Path) -> None:
    """--overwrite deletes a whole directory: only ever one that an lmtune run wrote (never e.g. `-o .`)."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve():
        raise LmtuneError(
            f"--overwrite would delete {path}, which holds the current directory (or is your home directory)",
            hint="give the run its own directory, e.g. --output-dir runs/<name>",
        )
    started = (path / "config.yaml").is_file() and (path / "env.json").is_file()
    is_run = started or {p.name for p in path.iterdir()} <= _RUN_ENTRIES
    if not is_run:
        raise LmtuneError(
            f"--overwrite: {path} is not empty and is not an lmtune run directory (no config.yaml and env.json); "
            "refusing to delete it",
            hint="pick another --output-dir, or empty that directory yourself",
        )


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cuda": torch.version.cuda,
        "libraries": versions,
    }


class MetricsLog:
    """Appends one JSON line per record to metrics.jsonl (flushed, so a crash keeps what was logged). A non-finite
    number (a diverged loss) is written as null."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with disk_errors(self.path, "training metrics"), self.path.open("a", encoding="utf-8") as f:
            f.write(dumps_json(record) + "\n")
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """On resume, forget what was logged after the checkpoint we go back to (it will be logged again)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        text = "".join(dumps_json(r) + "\n" for r in kept)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)


def write_json(run_dir: Path, name: str, obj: Any) -> None:
    with disk_errors(run_dir / name, name):
        atomic_write_json(run_dir / name, obj)


def read_json(run_dir: Path, name: str) -> Any:
    path = run_dir / name
    if not path.exists():
        raise LmtuneError(f"{path} not found", hint="is this a run directory written by `lmtune train`?")
    return json.loads(path.read_text(encoding="utf-8"))


def check_same_data(run_dir: Path, info: dict[str, dict[str, Any]]) -> None:
    """The config names the data files, not their contents: a resumed run must also see the same examples."""
    saved_path = run_dir / "data.json"
    if not saved_path.exists():
        return
    saved = read_json(run_dir, "data.json").get("splits", {})
    changed = [
        name
        for name in sorted(set(saved) | set(info))
        if saved.get(name, {}).get("fingerprint") != info.get(name, {}).get("fingerprint")
    ]
    if changed:
        raise LmtuneError(
            f"--resume: the {' and '.join(changed)} data differ from the data {run_dir} was started with "
            f"(content fingerprints in {saved_path} do not match)",
            hint="restore the original data files, or start a new run (--overwrite or another --output-dir)",
        )
