"""One job's training, in a subprocess of its own: `python -m lmtune.service.worker STORE JOB_ID`.

It runs the ordinary `lmtune.finetune` into the job's run directory (STORE/runs/<job id>), resuming from the last
checkpoint when there is one, and writes the job's status, events and results into the store. A crash here
fails the job, never the server. Cancel and server shutdown reach it as SIGTERM, which the training loop already
honours (`graceful_interrupt`): it finishes the current optimizer step, writes a checkpoint, and stops. Exit code
75 (EX_TEMPFAIL) says "stopped, resume me"; the server then leaves the job `running` for its next start.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from lmtune.service.jobs import fine_tuned_name
from lmtune.service.store import Store

RESUME_LATER = 75


def main(argv: list[str]) -> int:
    store, job_id = Store(argv[0]), argv[1]
    _stop_with_parent()
    job = store.job(job_id)
    if job is None or job["status"] != "running":
        return 0
    from lmtune.errors import Interrupted, LmtuneError

    try:
        _train(store, job)
    except Interrupted as e:
        if store.job(job_id)["cancel_requested"]:  # type: ignore[index]
            store.add_event(job_id, f"Fine-tuning job cancelled after step {e.step} (checkpoint kept)")
            store.finish_job(job_id, "cancelled")
            return 0
        store.add_event(job_id, f"Paused after step {e.step}: the job resumes from its checkpoint on the next start")
        return RESUME_LATER
    except LmtuneError as e:
        _fail(store, job_id, str(e), "training_error")
        return 2
    except Exception as e:  # a bug or the machine: the job fails with the reason, the server lives on
        _fail(store, job_id, f"{type(e).__name__}: {e}", "server_error")
        return 1
    return 0


def _train(store: Store, job: dict[str, Any]) -> None:
    from lmtune.api import finetune
    from lmtune.train.checkpoint import latest_checkpoint

    job_id, run_dir = job["id"], Path(job["run_dir"])
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        store.add_event(job_id, f"Resuming from checkpoint {ckpt.name}")
    else:
        store.add_event(job_id, "Fine-tuning job started")
    # On resume, metrics.jsonl is cut back to the checkpoint's step: the steps up to it already have their events.
    done = int(ckpt.name.rsplit("-", 1)[1]) if ckpt is not None else -1
    events = _MetricEvents(store, job_id, run_dir / "metrics.jsonl", done)

    def report(text: str, warning: bool = False) -> None:
        store.add_event(job_id, text, level="warn" if warning else "info")

    result = finetune(
        job["config"], resume=ckpt is not None, overwrite=ckpt is None, after_step=[events], report=report
    )
    events(None)
    tokens = max((r.get("tokens", 0) for r in events.records if r.get("split") == "train"), default=0)
    result_file = _metrics_csv(store, job_id, result.run_dir)
    # Trained: the server loads the model for chat, then marks the job succeeded (succeeded means served).
    store.update_job(job_id, fine_tuned_model=fine_tuned_name(job), trained_tokens=tokens, result_files=[result_file])


class _MetricEvents:
    """After each optimizer step: the new rows of metrics.jsonl as OpenAI's `metrics` events (step, losses)."""

    def __init__(self, store: Store, job_id: str, path: Path, reported_through: int = -1) -> None:
        self.store, self.job_id, self.path, self.offset = store, job_id, path, 0
        self.reported_through = reported_through
        self.records: list[dict[str, Any]] = []

    def __call__(self, state: Any) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self.offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            self.records.append(rec)
            if rec.get("step", 0) <= self.reported_through:
                continue
            if rec.get("split") == "train":
                msg, data = f"Step {rec['step']}: training loss={rec['loss']:.4f}", {"train_loss": rec["loss"]}
            elif rec.get("split") == "validation":
                msg, data = f"Step {rec['step']}: validation loss={rec['loss']:.4f}", {"valid_loss": rec["loss"]}
            else:
                continue
            data.update(step=rec["step"], tokens=rec.get("tokens"))
            self.store.add_event(self.job_id, msg, kind="metrics", data=data)


def _metrics_csv(store: Store, job_id: str, run_dir: Path) -> str:
    """The run's training metrics as OpenAI's result file (step,train_loss,valid_loss,...), stored as a file."""
    from lmtune.report.run import read_run
    from lmtune.service.store import new_id

    rows: dict[int, dict[str, Any]] = {}
    for rec in read_run(run_dir).metrics:
        row = rows.setdefault(rec["step"], {"step": rec["step"]})
        key = "train_loss" if rec.get("split") == "train" else "valid_loss"
        row[key] = rec.get("loss")
        if rec.get("split") == "train":
            row["train_tokens"] = rec.get("tokens")
    lines = ["step,train_loss,valid_loss,train_tokens"]
    for step in sorted(rows):
        r = rows[step]
        lines.append(",".join("" if r.get(k) is None else str(r[k]) for k in ("step", "train_loss", "valid_loss",
                                                                             "train_tokens")))  # fmt: skip
    file_id = new_id("file")
    data = ("\n".join(lines) + "\n").encode()
    store.file_path(file_id).write_bytes(data)
    store.add_file(file_id, len(data), f"{job_id}-metrics.csv", "fine-tune-results")
    return file_id


def _fail(store: Store, job_id: str, message: str, code: str) -> None:
    store.add_event(job_id, f"Fine-tuning job failed: {message}", level="error")
    store.finish_job(job_id, "failed", error={"code": code, "message": message, "param": None})


def _stop_with_parent() -> None:
    """When the server dies (even by kill -9), the kernel signals this worker, which then asks itself to stop once,
    as a SIGTERM would: it checkpoints after its current step and the restarted server resumes the job. (Linux's
    PR_SET_PDEATHSIG; elsewhere the worker trains on to the end.) The kernel may signal more than once (a subreaper
    the worker is handed to), and a second SIGTERM would abort the checkpoint, so it is passed on only once."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    passed_on = []

    def parent_died(signum: int, frame: Any) -> None:
        if not passed_on:
            passed_on.append(signum)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGUSR1, parent_died)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGUSR1)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != os.environ.get("LMTUNE_SERVER_PID", str(os.getppid())):  # it died before prctl
        parent_died(signal.SIGUSR1, None)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))
