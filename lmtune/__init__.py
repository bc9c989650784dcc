"""lmtune: fine-tune pre-trained language models on your own task data, with the evidence that it worked.

Public API (imported lazily, so `import lmtune` stays light)::

    import lmtune
    result = lmtune.finetune("configs/quickstart.yaml", overrides=["train.lr=1e-3"])
    print(result.run_dir, result.summary["val_loss_after"])
    print(lmtune.generate(result.run_dir, prompt="What is 2 + 3?"))
    report = lmtune.check_data("configs/quickstart.yaml")   # data pre-flight; also split_file, dedup_file,
    print(report.exit_code(), len(report.findings))          # leakage_report, redact_file, augment, estimate
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "LmtuneError",
    "RunConfig",
    "augment",
    "check_data",
    "compare_runs",
    "cross_validate",
    "dedup_file",
    "estimate",
    "evaluate_run",
    "export_model",
    "finetune",
    "generate",
    "leakage_report",
    "list_runs",
    "load_config",
    "open_chat",
    "preview",
    "redact_file",
    "run_service",
    "split_file",
    "tune",
]

_EXPORTS = {
    "finetune": "lmtune.api",
    "preview": "lmtune.api",
    "check_data": "lmtune.api",
    "augment": "lmtune.api",
    "estimate": "lmtune.api",
    "evaluate_run": "lmtune.api",
    "cross_validate": "lmtune.api",
    "tune": "lmtune.api",
    "list_runs": "lmtune.api",
    "compare_runs": "lmtune.api",
    "export_model": "lmtune.ship",
    "split_file": "lmtune.data.split",
    "dedup_file": "lmtune.data.dedup",
    "leakage_report": "lmtune.data.leakage",
    "redact_file": "lmtune.data.pii",
    "generate": "lmtune.evaluate.generate",
    "load_config": "lmtune.config",
    "open_chat": "lmtune.ship.chat",
    "run_service": "lmtune.service",
    "RunConfig": "lmtune.config",
    "LmtuneError": "lmtune.errors",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmtune' has no attribute {name!r}")
