"""Generation behind the server: a bounded queue and one worker thread that batches requests dynamically.

The worker takes the oldest waiting job, gathers every other waiting job that can share its generation step (the
same backend and adapter, the same sampling settings), and runs them as one left-padded `generate` call. Each job
gets its text as it is produced: a `StoppingCriteria` (transformers' per-step hook) reads every new token, applies
the job's own stop strings and token budget, and hands the new text to the job's `emit` callback.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from lmtune.serve.registry import Served

# How long the worker waits for more requests to join a batch once it has one: long enough for concurrent
# clients' requests to arrive together, short against a generation step.
GATHER_SECONDS = 0.005


@dataclass(eq=False)  # jobs are told apart by identity (the worker removes the ones it batched)
class Job:
    """One completion to generate. `emit(kind, payload)` is called from the worker thread: ("text", str) as text
    is produced, then ("done", finish_reason) or ("error", message)."""

    served: Served
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    emit: Callable[[str, Any], None]
    generated: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already emitted
    finished: bool = False

    def batch_key(self) -> tuple:
        sampling = (self.temperature, self.top_p, self.seed) if self.temperature > 0 else (0.0, 1.0, None)
        backend = self.served.backend
        adapter = None if backend.mixes_adapters else self.served.adapter
        return (id(backend), adapter, *sampling)


class QueueFull(Exception):
    pass


class _Rows(StoppingCriteria):
    """Per-row bookkeeping of one batch, called by `generate` after each new token (input_ids with it appended)."""

    def __init__(self, jobs: list[Job], tokenizer: Any, stop_ids: set[int]) -> None:
        self.jobs, self.tokenizer, self.stop_ids = jobs, tokenizer, stop_ids

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for job, token in zip(self.jobs, last, strict=True):
            if not job.finished:
                _advance(job, token, self.tokenizer, self.stop_ids)
        return torch.tensor([j.finished for j in self.jobs], dtype=torch.bool, device=input_ids.device)


def _advance(job: Job, token: int, tokenizer: Any, stop_ids: set[int]) -> None:
    if token in stop_ids:
        return _finish(job, "stop")
    job.generated.append(token)
    job.text = tokenizer.decode(job.generated, skip_special_tokens=True)
    hits = [i for i in (job.text.find(s) for s in job.stop) if i >= 0]
    if hits:
        job.text = job.text[: min(hits)]
        return _finish(job, "stop")
    if len(job.generated) >= job.max_tokens:
        return _finish(job, "length")
    # Hold back what may be the start of a stop string, or half of a multi-byte character.
    hold = max((k for s in job.stop for k in range(1, len(s)) if job.text.endswith(s[:k])), default=0)
    safe = len(job.text) - hold
    while safe > job.sent and job.text[safe - 1] == "\ufffd":
        safe -= 1
    if safe > job.sent:
        job.emit("text", job.text[job.sent : safe])
        job.sent = safe


def _finish(job: Job, reason: str) -> None:
    if len(job.text) > job.sent:
        job.emit("text", job.text[job.sent :])
        job.sent = len(job.text)
    job.finished = True
    job.emit("done", reason)


class Engine:
    """The queue and its worker. `submit` raises QueueFull when `max_queue` jobs already wait."""

    def __init__(self, *, max_queue: int = 64, max_batch: int = 16) -> None:
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.max_batch = max_batch
        self.batches = 0  # generate calls made (the batching test reads it)
        self._waiting: list[Job] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="lmtune-serve-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the jobs already taken, then end the worker (what SIGTERM's graceful shutdown waits for)."""
        self._stopping.set()
        self._thread.join(timeout=60)

    def submit(self, jobs: list[Job]) -> None:
        """Queue all of a request's jobs, or none (so `n` completions are never half-accepted)."""
        if self.jobs.maxsize - self.jobs.qsize() < len(jobs):
            raise QueueFull
        for job in jobs:
            self.jobs.put_nowait(job)

    def _work(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[Job]:
        if not self._waiting:
            try:
                self._waiting.append(self.jobs.get(timeout=0.1))
            except queue.Empty:
                return []
            time.sleep(GATHER_SECONDS)
        while True:
            try:
                self._waiting.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        key = self._waiting[0].batch_key()
        batch = [j for j in self._waiting if j.batch_key() == key][: self.max_batch]
        self._waiting = [j for j in self._waiting if j not in batch]
        return batch

    def _run(self, batch: list[Job]) -> None:
        try:
            generate_batch(batch)
            self.batches += 1
        except Exception as e:  # a failed batch answers its requests with an error; the server keeps running
            for job in batch:
                if not job.finished:
                    job.finished = True
                    job.emit("error", f"generation failed: {type(e).__name__}: {e}")


@torch.no_grad()
def generate_batch(batch: list[Job]) -> None:
    """Run one left-padded `generate` call for jobs that share a backend, sampling settings and an adapter (or
    LoRA adapters peft can mix in one batch, each row with its own)."""
    first = batch[0]
    backend = first.served.backend
    model, tok = backend.model, backend.tokenizer
    width = max(len(j.prompt_ids) for j in batch)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in batch], device=backend.device)
    mask = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in batch], device=ids.device)
    stop_ids = stop_token_ids(model, tok)
    sample = first.temperature > 0
    adapters = [j.served.adapter for j in batch]
    mixed = {"adapter_names": adapters} if len(set(adapters)) > 1 else {}
    with backend.lock:
        if not mixed and first.served.adapter is not None:
            model.set_adapter(first.served.adapter)
        if sample and first.seed is not None:
            torch.manual_seed(first.seed)
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max(j.max_tokens for j in batch),
            do_sample=sample,
            **({"temperature": first.temperature, "top_p": first.top_p} if sample else {}),
            pad_token_id=pad,
            eos_token_id=sorted(stop_ids) or None,
            stopping_criteria=StoppingCriteriaList([_Rows(batch, tok, stop_ids)]),
            **mixed,
        )
    for job in batch:
        if not job.finished:
            _finish(job, "length")


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id}
    return {i for i in ids if i is not None}
