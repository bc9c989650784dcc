"""The server's job loop, in one thread: validate new jobs' files, start queued jobs in worker subprocesses (N at
a time), pass cancels on, and read each worker's exit.

Statuses go validating_files -> queued -> running -> succeeded | failed | cancelled. The store is the truth: a
server started over a store whose jobs say `running` (it was killed mid-job) starts those jobs again first, and
their workers resume from the last checkpoint. A worker still alive from the killed server (it checkpoints and
stops on its own, see worker.py) is waited for before its job starts again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.service.store import Store
from lmtune.service.validation import validate_job
from lmtune.service.worker import RESUME_LATER

Reporter = Callable[..., None]


@dataclass
class _Running:
    job_id: str
    process: subprocess.Popen | None  # None: a worker of an earlier server, still finishing (watched by pid)
    pid: int
    signalled: bool = False


@dataclass
class Scheduler:
    store: Store
    workers: int = 1
    on_succeeded: Callable[[dict[str, Any]], None] = lambda job: None
    report: Reporter = lambda text, warning=False: None
    poll_s: float = 0.2
    running: dict[str, _Running] = field(default_factory=dict)
    _resume: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        for job in self.store.oldest("running"):
            pid = job["pid"] or 0
            if _alive_worker(pid):
                self.running[job["id"]] = _Running(job["id"], None, pid)
            else:
                self._resume.append(job["id"])
        self._thread = threading.Thread(target=self._loop, name="lmtune-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, grace_s: float = 120.0) -> None:
        """Ask every worker to checkpoint and stop (their jobs stay `running` and resume on the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for r in self.running.values():
            if r.process is not None and r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for r in self.running.values():
            if r.process is not None:
                try:
                    r.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    r.process.kill()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # the loop must outlive any one job's surprise
                self.report(f"job loop: {type(e).__name__}: {e}", warning=True)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _tick(self) -> None:
        for job in self.store.oldest("validating_files"):
            if self._stop.is_set():
                return
            validate_job(self.store, job)
        self._reap()
        self._cancel()
        while len(self.running) < self.workers and not self._stop.is_set():
            job_id = self._next()
            if job_id is None:
                break
            self._spawn(job_id)

    def _next(self) -> str | None:
        while self._resume:
            job_id = self._resume.pop(0)
            job = self.store.job(job_id)
            if job is not None and job["status"] == "running":
                if job["cancel_requested"]:
                    self.store.finish_job(job_id, "cancelled")
                    continue
                return job_id
        queued = self.store.oldest("queued")
        if not queued:
            return None
        self.store.update_job(queued[0]["id"], status="running", started_at=int(time.time()))
        return queued[0]["id"]

    def _spawn(self, job_id: str) -> None:
        job = self.store.job(job_id)
        assert job is not None
        env = {**os.environ, "LMTUNE_SERVER_PID": str(os.getpid()), "TOKENIZERS_PARALLELISM": "false"}
        with Path(job["run_dir"] + ".log").open("ab") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "lmtune.service.worker", str(self.store.root), job_id],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # a Ctrl-C at the terminal reaches the server, which stops its workers itself
            )  # fmt: skip
        self.store.update_job(job_id, pid=process.pid)
        self.running[job_id] = _Running(job_id, process, process.pid)

    def _cancel(self) -> None:
        for r in self.running.values():
            if r.signalled:
                continue
            job = self.store.job(r.job_id)
            if job is not None and job["cancel_requested"]:
                os.kill(r.pid, signal.SIGTERM)  # the loop checkpoints after the step it is in, then stops
                r.signalled = True

    def _reap(self) -> None:
        for job_id, r in list(self.running.items()):
            if r.process is None:
                if not _alive_worker(r.pid):
                    del self.running[job_id]
                    self._resume.append(job_id)
                continue
            code = r.process.poll()
            if code is None:
                continue
            del self.running[job_id]
            self._exited(job_id, code)

    def _exited(self, job_id: str, code: int) -> None:
        job = self.store.job(job_id)
        if job is None:
            return
        if job["status"] != "running":
            return
        if code == 0 and job["fine_tuned_model"]:
            self._succeeded(job)
        elif job["cancel_requested"]:
            self.store.finish_job(job_id, "cancelled")
        elif code == RESUME_LATER:  # stopped by a SIGTERM that was not a cancel: start it again from its checkpoint
            self._resume.append(job_id)
        else:
            tail = _tail(Path(job["run_dir"] + ".log"))
            message = f"the worker exited with code {code}" + (f": {tail}" if tail else "")
            self.store.add_event(job_id, f"Fine-tuning job failed: {message}", level="error")
            self.store.finish_job(job_id, "failed", error={"code": "worker_crashed", "message": message, "param": None})

    def _succeeded(self, job: dict[str, Any]) -> None:
        """Serve the trained model, then say succeeded: a client that sees the status can chat with it at once."""
        job_id, name = job["id"], job["fine_tuned_model"]
        try:
            self.on_succeeded(job)
        except Exception as e:  # the run trained but does not load: the job fails with the reason
            message = f"the trained model does not load for serving: {type(e).__name__}: {e}"
            self.store.finish_job(job_id, "failed", error={"code": "server_error", "message": message, "param": None})
            return
        self.store.add_event(job_id, f"New fine-tuned model created: {name}")
        self.store.finish_job(job_id, "succeeded")
        self.store.add_event(job_id, "The job has successfully completed")


def _alive_worker(pid: int) -> bool:
    """Whether `pid` is a live lmtune job worker (not a recycled pid of something else)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    return b"lmtune.service.worker" in cmdline and stat[0] != "Z"


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-500:]
