"""The pre-flight estimator: exact parameter counts, peak memory and run time before any compute is spent.

`spec` holds the shapes the formulas read; `model` reads them off a meta-device model; `plan` lays out the run's
micro-batches as the loop forms them; `memory` holds the memory terms, each its own derivation; `measure` runs
and times code (a matmul benchmark, the probe's memory meter); `result` is what `lmtune.api.preflight` returns.
"""

from lmtune.estimate.memory import (
    MemoryEstimate,
    Precision,
    block_activations,
    head_activations,
    logits_bytes,
    run_memory,
    step_memory,
)
from lmtune.estimate.model import describe_model, meta_model
from lmtune.estimate.plan import plan_steps, step_flops
from lmtune.estimate.result import EstimateResult, ProbeResult, notes
from lmtune.estimate.spec import LinearSpec, MicroBatch, ModelSpec, lora_parameters

__all__ = [
    "EstimateResult",
    "LinearSpec",
    "MemoryEstimate",
    "MicroBatch",
    "ModelSpec",
    "Precision",
    "ProbeResult",
    "block_activations",
    "describe_model",
    "head_activations",
    "logits_bytes",
    "lora_parameters",
    "meta_model",
    "notes",
    "plan_steps",
    "run_memory",
    "step_flops",
    "step_memory",
]
