"""`lmtune serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for runs and exported models.

registry.py loads the models (LoRA runs on one base share it), engine.py batches and generates, app.py is the
HTTP surface, server.py checks the settings and builds the uvicorn server."""

from __future__ import annotations

from lmtune.serve.server import build_server, serve

__all__ = ["build_server", "serve"]
