"""`lmtune server`: a local OpenAI-compatible fine-tuning service (files, jobs, events, checkpoints) and a web
studio over it.

store.py (SQLite WAL state), jobs.py (OpenAI's job request <-> RunConfig), validation.py (the data check of a
job's files), scheduler.py (the job loop in the server), worker.py (one job's `lmtune.finetune` in a subprocess),
routes.py (the /v1 files and jobs routes), studio.py (the web pages), server.py (everything on one uvicorn server,
with `lmtune serve`'s chat routes for the fine-tuned models)."""

from __future__ import annotations

from lmtune.service.server import build_service, run_service

__all__ = ["build_service", "run_service"]
