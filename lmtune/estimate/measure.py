"""Measurements on this machine for `lmtune estimate`: matmul throughput, peak memory of a probe, time forecast.

Kept apart from the formulas in `lmtune.estimate`: these run code and time it, the formulas only count.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch


def matmul_throughput(tokens: int, hidden: int, intermediate: int, autocast: torch.dtype | None, device: str) -> float:
    """FLOP/s this machine reaches on a step-like workload of the model's shape: forward and backward of
    Linear(h, f) -> SiLU -> Linear(f, h) over `tokens` rows, under the run's autocast (a bare matmul benchmark
    would miss the casts, the elementwise ops and the backward that a real step also pays for).

    Rough: attention, norms, the loss, the optimizer and per-op overheads are left out, so small models run
    slower than this predicts. A probe measures instead.
    """
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(hidden, intermediate, bias=False, device=device),
        torch.nn.SiLU(),
        torch.nn.Linear(intermediate, hidden, bias=False, device=device),
    )
    x = torch.randn(tokens, hidden, device=device, requires_grad=True)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step() -> None:
        with torch.autocast(device, dtype=autocast or torch.float32, enabled=autocast is not None):
            out = mlp(x)
        out.float().sum().backward()
        mlp.zero_grad(set_to_none=True)

    def window(seconds: float) -> float:  # steps per second over about `seconds`
        reps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or reps < 2:
            step()
            reps += 1
            sync()
        return reps / elapsed

    window(0.2)  # warm-up: oneDNN/cuBLAS pick and build their kernels for these shapes on first use
    rate = statistics.median(window(0.05) for _ in range(6))  # the median of short windows shrugs off noise
    return 6 * 2 * hidden * intermediate * tokens * rate


def forecast_seconds(step_tokens: Sequence[int], measured: Sequence[float], rate_from: int = 1) -> float:
    """Training seconds of the whole run (the steps' padded tokens) after a probe timed its first steps.

    The first step counts as measured (it pays one-time costs: kernel selection, allocating AdamW's states); every
    other step at the median seconds per padded token of the probed steps from index `rate_from` on (those not
    slowed by the memory measurement). The median keeps a step slowed by something else on the machine from
    moving the forecast.
    """
    timed = list(zip(measured, step_tokens, strict=False))
    pairs = timed[rate_from:] or timed[1:] or timed
    rate = statistics.median(t / tokens for t, tokens in pairs)
    return measured[0] + rate * sum(step_tokens[1:])


class PeakRss:
    """Peak resident set size of this process, sampled by a background thread (torch ops release the GIL)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        return int(self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self.now())


class MemoryMeter:
    """The peak of the bytes torch allocates inside `with` (or until `stop()`), above what was allocated when it
    began: the quantity the analytic estimate models.

    CUDA: torch.cuda.max_memory_allocated. CPU has no such counter, but torch's CPU allocator reports every
    allocation and free to the profiler (profile_memory=True); their running sum in order gives the same peak.
    The profiler slows steps by a few percent, so `stop()` ends it before the steps that are timed. The CPU's peak
    RSS above the same starting point is measured to the end: it adds what glibc keeps of freed memory and
    oneDNN's caches, which no count of tensors predicts.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = 0
        self.rss_peak: int | None = None
        self._prof: Any = None
        self.slows_steps = device != "cuda"  # the profiler's overhead; CUDA's counter costs nothing
        self.measures = (
            "torch.cuda.max_memory_allocated above the pre-model allocation"
            if device == "cuda"
            else "peak bytes allocated by torch above the pre-model baseline (profiler memory events)"
        )

    def __enter__(self) -> MemoryMeter:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        from torch.profiler import ProfilerActivity, profile

        self._rss = PeakRss().__enter__()
        self._rss_base = self._rss.now()
        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():  # kineto prints 'profiler_start'/'profiler_stop' lines on stderr
            self._prof.__enter__()
        return self

    def stop(self) -> None:
        """End the measurement of the allocated peak here (RSS goes on until the `with` ends)."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = self.peak or torch.cuda.max_memory_allocated() - self._base
            return
        if self._prof is None:
            return
        with _quiet_stderr():
            self._prof.__exit__(None, None, None)
        events = (e for e in self._prof.profiler.kineto_results.events() if e.name() == "[memory]")
        running = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            running += e.nbytes()
            peak = max(peak, running)
        self.peak, self._prof = peak, None

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.device != "cuda":
            self._rss.__exit__(*exc)
            self.rss_peak = self._rss.peak - self._rss_base


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ writes there directly, past sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
