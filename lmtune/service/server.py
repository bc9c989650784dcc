"""`lmtune server`: the fine-tuning service and the studio on one uvicorn server, beside `lmtune serve`'s chat
routes, which answer for every succeeded job's `ft:` model as soon as it is done."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from lmtune.errors import LmtuneError
from lmtune.serve.app import Limits, create_app
from lmtune.serve.engine import Engine
from lmtune.serve.registry import Registry, add_source
from lmtune.serve.server import is_loopback
from lmtune.service.routes import ServiceLimits, add_file_routes, add_job_routes
from lmtune.service.scheduler import Scheduler
from lmtune.service.store import Store
from lmtune.service.studio import add_studio_routes

Reporter = Callable[..., None]


def _silent(text: str, warning: bool = False) -> None:
    pass


@dataclass
class Service:
    uvicorn: uvicorn.Server
    store: Store
    scheduler: Scheduler
    registry: Registry

    def run(self) -> None:
        """Serve until SIGTERM/Ctrl-C; then ask the running jobs to checkpoint (they resume on the next start)."""
        self.scheduler.start()
        try:
            self.uvicorn.run()
        finally:
            self.scheduler.stop()


def build_service(
    store_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    workers: int = 1,
    max_upload_bytes: int = 64 << 20,
    max_tokens: int = 1024,
    device: str = "cpu",
    report: Reporter = _silent,
) -> Service:
    """The service over STORE (created if new): the app, its job scheduler, and the succeeded jobs' models loaded
    for chat. `.run()` serves."""
    if not is_loopback(host) and not api_key:
        raise LmtuneError(
            f"--host {host} would let other machines train and read files without a key",
            hint="pass --api-key KEY (or LMTUNE_API_KEY) with a non-loopback --host, or keep --host 127.0.0.1",
        )
    if workers < 1 or max_upload_bytes < 1:
        raise LmtuneError("--workers and --max-upload-mb must be at least 1")
    store = Store(store_dir)
    registry = Registry(device=device)

    def serve_model(job: dict[str, Any]) -> None:
        if job["fine_tuned_model"] not in registry.models:
            add_source(registry, job["run_dir"], job["fine_tuned_model"], report)
            report(f"serving {job['fine_tuned_model']}")

    for job in reversed(store.jobs(status="succeeded", limit=1 << 30)):
        try:
            serve_model(job)
        except LmtuneError as e:  # a run deleted by hand: the others are still served
            report(f"{job['id']}: not served: {e}", warning=True)
    scheduler = Scheduler(store, workers, on_succeeded=serve_model, report=report)
    engine = Engine(max_queue=64, max_batch=16)
    app = create_app(registry, engine, Limits(api_key=api_key, max_tokens=max_tokens,
                                              default_max_tokens=min(128, max_tokens)))  # fmt: skip
    limits = ServiceLimits(api_key=api_key, max_upload_bytes=max_upload_bytes)
    add_file_routes(app, store, limits)
    add_job_routes(app, store, scheduler, limits)
    add_studio_routes(app, store, scheduler, registry, limits)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
    return Service(uvicorn.Server(config), store, scheduler, registry)


def run_service(store_dir: str | Path, *, report: Reporter = _silent, **settings: Any) -> None:
    """Serve STORE until SIGTERM/Ctrl-C (see `build_service` for the settings)."""
    service = build_service(store_dir, report=report, **settings)
    config = service.uvicorn.config
    report(f"lmtune server: studio http://{config.host}:{config.port}/ · API http://{config.host}:{config.port}/v1")
    service.run()
