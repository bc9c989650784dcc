"""The last mile of a run: export it (merged Hugging Face model, PEFT adapter, GGUF) and chat with it.

The HTTP server is its own package, `lmtune.serve`."""

from __future__ import annotations

from lmtune.ship.export import Exported, export_model

__all__ = ["Exported", "export_model"]
