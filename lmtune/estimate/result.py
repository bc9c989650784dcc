"""What `lmtune estimate` returns: the figures, the probe's measurements, and what they do not cover."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from lmtune.estimate.memory import MemoryEstimate
from lmtune.estimate.spec import ModelSpec


@dataclass(frozen=True)
class ProbeResult:
    """What N real optimizer steps measured."""

    steps: int
    memory_steps: int  # the first steps, over which `peak` was measured (the rest were timed)
    measures: str  # what `peak` is, in words
    peak: int  # bytes
    rss_peak: int | None  # CPU: peak RSS above the pre-model baseline (bytes)
    step_seconds: tuple[float, ...]
    estimate: MemoryEstimate  # the analytic estimate for the probed steps' own batches
    forecast_s: float  # the run's training time, extrapolated from the probe

    @property
    def ratio(self) -> float:
        return self.estimate.peak / self.peak if self.peak else math.nan

    @property
    def median_step_s(self) -> float:
        times = self.step_seconds[1:] or self.step_seconds
        return statistics.median(times)

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "memory_steps": self.memory_steps,
            "measures": self.measures,
            "peak_bytes": self.peak,
            "rss_peak_bytes": self.rss_peak,
            "estimate_bytes": self.estimate.peak,
            "estimate_over_measured": round(self.ratio, 3),
            "step_seconds": [round(t, 4) for t in self.step_seconds],
            "median_step_s": round(self.median_step_s, 4),
            "forecast_train_s": round(self.forecast_s, 2),
            "estimate": self.estimate.as_dict(),
        }


@dataclass(frozen=True)
class EstimateResult:
    """The pre-flight figures for one config (bytes, seconds)."""

    config: str
    model: str
    method: str
    device: str
    precision: str  # e.g. 'float32 weights, bf16 autocast'
    total_params: int
    trainable_params: int
    lora_params: int
    steps: int
    micro_batch_size: int
    grad_accum: int
    tokens: int  # padded tokens the run computes on
    trained_tokens: int
    peak_batch: tuple[int, int]  # (rows, width) of the micro-batch setting the peak
    memory: MemoryEstimate
    flops: float
    throughput_flops: float  # measured by a matmul micro-benchmark
    time_s: float  # flops / throughput: rough
    probe: ProbeResult | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def trainable_percent(self) -> float:
        return 100 * self.trainable_params / self.total_params if self.total_params else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("memory", "probe")}
        out["trainable_percent"] = round(self.trainable_percent, 4)
        out["peak_batch"] = {"rows": self.peak_batch[0], "width": self.peak_batch[1]}
        out["memory"] = self.memory.as_dict()
        out["time_s"] = round(self.time_s, 2)
        out["throughput_flops_per_s"] = out.pop("throughput_flops")
        out["probe"] = self.probe.as_dict() if self.probe else None
        out["notes"] = list(self.notes)
        return out


def notes(spec: ModelSpec, device: str, probe: ProbeResult | None) -> tuple[str, ...]:
    """What the figures do not cover, in words for the output."""
    out = []
    if not spec.llama_like:
        out.append(
            "activations: this architecture is not Llama-like (q/k/v/o projections, gated MLP), so its blocks use "
            "Korthikanti et al.'s generic per-layer formula: expect a coarser estimate"
        )
    if device == "cuda":
        out.append("memory counts tensors; the CUDA context and the caching allocator's reserve come on top")
    elif probe is not None and probe.rss_peak is not None:
        out.append(
            "CPU: the process's RSS also holds memory glibc keeps after frees and oneDNN's caches, which grow with "
            "the number of distinct batch shapes; the probe's peak RSS shows how much"
        )
    out.append("time without a probe: FLOPs / a benchmark of this machine, rough (small models run slower)")
    return tuple(out)
