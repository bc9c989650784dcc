"""The Python API. Each function reads top to bottom as the recipe of its job, composing the stages below it.

One module per job: `train` (finetune, preview), `check` (check_data), `augment`, `estimate`.
"""

from lmtune.api.augment import augment
from lmtune.api.check import check_data
from lmtune.api.crossval import CVResult, cross_validate
from lmtune.api.estimate import estimate
from lmtune.api.evaluate import evaluate_run
from lmtune.api.train import PreviewItem, RunResult, finetune, preview, summarize
from lmtune.config import ConfigLike

__all__ = [
    "CVResult",
    "ConfigLike",
    "PreviewItem",
    "RunResult",
    "augment",
    "check_data",
    "cross_validate",
    "estimate",
    "evaluate_run",
    "finetune",
    "preview",
    "summarize",
]
