"""Faults of the machine, not the input (issue 14): a full disk while checkpointing and a read-only run directory
end in a message and exit code 3, and what was written before stays usable; SIGTERM stops like Ctrl-C; kill -9 then
--resume ends where an uninterrupted run ends.

A small tmpfs stands in for a full or read-only disk; mounting one takes root, so elsewhere these tests skip.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import REPO, chat_record, run_main, write_jsonl

from lmtune.errors import EnvironmentFault
from lmtune.rundir import disk_errors


def mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB file system: room for the run's first checkpoint of the tiny model (2.7 MiB), not a second."""
    disk = tmp_path / "disk"
    if not mount(disk, "size=4m"):
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def config(tmp_path: Path) -> Path:
    data = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(40)])
    cfg = {
        "name": "faults",
        "data": {"train": str(data), "val_fraction": 0.2, "max_length": 64},
        "method": "full",
        "train": {"max_steps": 3, "batch_size": 4, "mixed_precision": "no", "save_every": 1, "keep_checkpoints": 1},
        "forgetting": {"measure": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_full_disk_keeps_the_last_checkpoint_and_resumes_once_freed(tmp_path, small_disk, monkeypatch, capsys):
    run_dir = small_disk / "run"
    code, _, err = run_main(monkeypatch, capsys, "train", config(tmp_path), "--output-dir", run_dir)
    assert code == 3, err
    assert "the disk is full" in err and "checkpoint of step 2" in err and "MiB" in err and "Traceback" not in err
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-000001"]  # no half-written step 2
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    code, _, err = run_main(monkeypatch, capsys, "train", config(tmp_path), "--output-dir", run_dir, "--resume")
    assert code == 0, err
    assert "resuming from" in err and "step 1 of 3" in err


def test_a_read_only_run_directory_is_exit_3(tmp_path, monkeypatch, capsys):
    disk = tmp_path / "ro"
    if not mount(disk, "size=1m,ro"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        code, _, err = run_main(monkeypatch, capsys, "train", config(tmp_path), "--output-dir", disk / "run")
        assert code == 3 and "cannot create the run directory" in err and "Traceback" not in err, err
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize(
    "error, needle",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"), "the disk is full"),
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    ],
)
def test_disk_errors_become_environment_faults(tmp_path, error, needle):
    with pytest.raises(EnvironmentFault, match=needle) as caught, disk_errors(tmp_path / "x", "checkpoint", 3 << 20):
        raise error
    assert caught.value.exit_code == 3
    assert ("3.0 MiB" in str(caught.value)) == (needle == "the disk is full")


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(ValueError), disk_errors(tmp_path, "checkpoint", 1):
        raise ValueError("a bug, not the disk")


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    """A scheduler's SIGTERM: the step finishes, a checkpoint is written, the exit says how to resume."""
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    args = ["train", config(tmp_path), "-o", tmp_path / "run", "--set", "train.max_steps=100000"]
    proc = subprocess.Popen([sys.executable, "-m", "lmtune.cli", *map(str, args)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    seen = b""
    try:
        while b"train:" not in seen:  # the progress bar shows once the loop (and its handler) runs
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    stderr = (seen + err).decode("utf-8", errors="replace")
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    match = re.search(r"stopped after step (\d+) and saved its checkpoint", stderr)
    assert match, stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / f"step-{int(match.group(1)):06d}" / "loop_state.json").is_file()


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """kill -9 at whatever step the run has reached (after its first checkpoint): --resume ends with the very
    weights of a run that was never interrupted, and the dead process's .lock does not stand in the way."""
    import torch
    from safetensors.torch import load_file

    cfg = config(tmp_path)
    settings = ["--set", "train.max_steps=8", "--set", "train.save_every=2", "--set", "train.keep_checkpoints=4"]
    code, _, err = run_main(monkeypatch, capsys, "train", cfg, "-o", tmp_path / "whole", *settings)
    assert code == 0, err

    run_dir = tmp_path / "killed"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    proc = subprocess.Popen([sys.executable, "-m", "lmtune.cli", "train", str(cfg), "-o", str(run_dir), *settings],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while not (run_dir / "checkpoints" / "step-000002").is_dir() and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    if (run_dir / "summary.json").exists():
        pytest.skip("the run finished before it could be killed")
    code, _, err = run_main(monkeypatch, capsys, "train", cfg, "-o", run_dir, *settings, "--resume")
    assert code == 0, err
    whole = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    resumed = load_file(str(run_dir / "final" / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name
