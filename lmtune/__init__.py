"""lmtune: fine-tune pre-trained language models on your own task data, with the evidence that it worked.

Public API (imported lazily, so `import lmtune` stays light)::

    import lmtune
    result = lmtune.finetune("configs/quickstart.yaml", overrides=["train.lr=1e-3"])
    print(result.run_dir, result.summary["val_loss_after"])
    print(lmtune.generate(result.run_dir, prompt="What is 2 + 3?"))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["LmtuneError", "RunConfig", "finetune", "generate", "load_config", "preview"]

_EXPORTS = {
    "finetune": "lmtune.api",
    "preview": "lmtune.api",
    "generate": "lmtune.evaluate.generate",
    "load_config": "lmtune.config",
    "RunConfig": "lmtune.config",
    "LmtuneError": "lmtune.errors",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmtune' has no attribute {name!r}")
