"""The Python API. Each function reads top to bottom as the recipe of its job, composing the stages below it.

One module per job: `train` (finetune), `previewing` (preview), `check` (check_data), `augmentation` (augment),
`preflight` (estimate), `evaluate`, `crossval`, `data_jobs` (split, dedup, leakage, redact, check outputs),
`run_jobs` (generate, score predictions, report). `setup` holds what they share: `prepare_data` and
`build_model`, so every job sees the same run. No module is named like a function it exports: the names are
imported lazily, and a submodule, once imported, would shadow a function of its name on the package.

Names are imported lazily, so a job that trains nothing (`lmtune.api.data_jobs`) never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "augment": "lmtune.api.augmentation",
    "check_data": "lmtune.api.check",
    "CVResult": "lmtune.api.crossval",
    "cross_validate": "lmtune.api.crossval",
    "estimate": "lmtune.api.preflight",
    "evaluate_run": "lmtune.api.evaluate",
    "RunRow": "lmtune.api.leaderboard",
    "compare_runs": "lmtune.api.leaderboard",
    "list_runs": "lmtune.api.leaderboard",
    "PreviewItem": "lmtune.api.previewing",
    "preview": "lmtune.api.previewing",
    "Built": "lmtune.api.setup",
    "Prepared": "lmtune.api.setup",
    "build_model": "lmtune.api.setup",
    "prepare_data": "lmtune.api.setup",
    "summarize": "lmtune.api.summary",
    "RunResult": "lmtune.api.train",
    "finetune": "lmtune.api.train",
    "TuneResult": "lmtune.api.search",
    "tune": "lmtune.api.search",
    "ConfigLike": "lmtune.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmtune.api' has no attribute {name!r}")
