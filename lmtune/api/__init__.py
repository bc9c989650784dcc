"""The Python API. Each function reads top to bottom as the recipe of its job, composing the stages below it.

One module per job: `train` (finetune), `preview`, `check` (check_data), `augment`, `estimate`, `evaluate`,
`crossval`, `data_jobs` (split, dedup, leakage, redact). `setup` holds what they share: `prepare_data` and
`build_model`, so every job sees the same run.
"""

from lmtune.api.augment import augment
from lmtune.api.check import check_data
from lmtune.api.crossval import CVResult, cross_validate
from lmtune.api.estimate import estimate
from lmtune.api.evaluate import evaluate_run
from lmtune.api.preview import PreviewItem, preview
from lmtune.api.setup import Built, Prepared, build_model, prepare_data
from lmtune.api.summary import summarize
from lmtune.api.train import RunResult, finetune
from lmtune.config import ConfigLike

__all__ = [
    "Built",
    "CVResult",
    "ConfigLike",
    "Prepared",
    "PreviewItem",
    "RunResult",
    "augment",
    "build_model",
    "check_data",
    "cross_validate",
    "estimate",
    "evaluate_run",
    "finetune",
    "prepare_data",
    "preview",
    "summarize",
]
