"""One writer per run directory (issue 14): an exclusive flock held by the running process; a second run into it
is refused at once naming the holder's PID; a lock left by a killed process never blocks --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import REPO, chat_record, run_main, write_jsonl

from lmtune.errors import EnvironmentFault, LmtuneError
from lmtune.rundir import LOCK, check_run_dir, lock_run_dir, prepare_run_dir, release_run_dir

# What a run does first: lock the directory, then (checks passed) prepare it, which writes the PID into .lock.
HOLD = """
import pathlib, sys
from lmtune.rundir import lock_run_dir, prepare_run_dir
path = pathlib.Path(sys.argv[1])
lock_run_dir(path)
prepare_run_dir(path, resume=(path / "config.yaml").exists(), overwrite=False)
print("locked", flush=True)
sys.stdin.read()
"""


def holder(run_dir: Path) -> subprocess.Popen[str]:
    """Another process holding the run directory, as a running `lmtune train` does, until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("RANK", None)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def config(tmp_path: Path) -> Path:
    data = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(24)])
    cfg = {"name": "lock", "data": {"train": str(data), "val_fraction": 0.2, "max_length": 64}, "method": "full",
           "train": {"max_steps": 2, "batch_size": 4, "mixed_precision": "no", "save_every": 1},
           "forgetting": {"measure": False}}  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_second_writer_is_refused_naming_the_pid(tmp_path):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    try:
        with pytest.raises(LmtuneError, match=f"in use by another lmtune process \\(PID {proc.pid}") as caught:
            lock_run_dir(run_dir)
        assert caught.value.exit_code == 2
    finally:
        proc.communicate("")
    lock_run_dir(run_dir)  # the holder ended: free again
    release_run_dir(run_dir)


def test_lmtune_train_into_a_held_directory_exits_2_and_changes_nothing(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    try:
        before = sorted(p.name for p in run_dir.iterdir())
        args = ("train", config(tmp_path), "--output-dir", run_dir)
        for extra in ((), ("--overwrite",), ("--resume",)):
            code, _, err = run_main(monkeypatch, capsys, *args, *extra)
            assert code == 2 and f"PID {proc.pid}" in err and "Traceback" not in err, err
        assert sorted(p.name for p in run_dir.iterdir()) == before == [LOCK]
    finally:
        proc.communicate("")


def test_a_killed_holder_never_blocks_resume(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_main(monkeypatch, capsys, "train", config(tmp_path), "--output-dir", run_dir)
    assert code == 0, err
    proc = holder(run_dir)
    os.kill(proc.pid, signal.SIGKILL)  # dies holding the lock; its PID stays written in .lock
    proc.wait()
    assert (run_dir / LOCK).read_text().strip() == str(proc.pid)
    code, _, err = run_main(monkeypatch, capsys, "train", config(tmp_path), "--output-dir", run_dir, "--resume")
    assert code == 0, err


def test_a_stale_pid_file_alone_is_an_unused_directory_and_overwrite_keeps_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK).write_text("99999999\n")  # left by a process that died
    lock_run_dir(run_dir)
    try:
        assert check_run_dir(run_dir, resume=False, overwrite=False) is False
        (run_dir / "config.yaml").write_text("x")
        (run_dir / "env.json").write_text("{}")
        prepare_run_dir(run_dir, resume=False, overwrite=True)
        assert [p.name for p in run_dir.iterdir()] == [LOCK]
        assert (run_dir / LOCK).read_text().strip() == str(os.getpid())
        proc = holder_attempt(run_dir)  # the directory emptied in place is still held
        assert proc.returncode == 1 and f"PID {os.getpid()}" in proc.stderr, proc.stderr
    finally:
        release_run_dir(run_dir)


def holder_attempt(run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", HOLD, str(run_dir)], capture_output=True, text=True, env=env,
                          input="", timeout=120)  # fmt: skip


def test_a_refused_run_creates_nothing_in_an_existing_directory(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    try:
        (run_dir / LOCK).unlink()  # as in the moment before the holder writes its PID
        code, _, err = run_main(monkeypatch, capsys, "train", config(tmp_path), "--output-dir", run_dir)
        assert code == 2 and "PID unknown" in err, err
        assert list(run_dir.iterdir()) == []
    finally:
        proc.communicate("")


def test_output_dir_that_is_a_file_or_read_only(tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    code, _, err = run_main(monkeypatch, capsys, "train", config(tmp_path), "--output-dir", a_file)
    assert code == 2 and "is an existing file, not a directory" in err and "Traceback" not in err, err
    assert a_file.read_text() == "not a directory"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    with pytest.raises(EnvironmentFault, match="not writable"):
        lock_run_dir(locked / "run")
