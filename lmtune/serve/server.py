"""Build and run the server: safety checks on the settings, the models, the engine, uvicorn."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from lmtune.errors import LmtuneError
from lmtune.serve.app import Limits, create_app
from lmtune.serve.engine import Engine
from lmtune.serve.registry import Registry, load_registry

Reporter = Callable[..., None]


def _silent(text: str, warning: bool = False) -> None:
    pass


@dataclass
class Server:
    uvicorn: uvicorn.Server
    registry: Registry
    engine: Engine


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(
    sources: Sequence[str | Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_queue: int = 64,
    max_batch: int = 16,
    max_tokens: int = 1024,
    max_body_bytes: int = 1 << 20,
    device: str = "auto",
    report: Reporter = _silent,
) -> Server:
    """Load `sources` (run or model directories) onto `device` (auto: cuda when there is one) and build the uvicorn
    server; `.uvicorn.run()` serves."""
    if not sources:
        raise LmtuneError("no model to serve", hint="lmtune serve runs/NAME [runs/OTHER ...]")
    if not is_loopback(host) and not api_key:
        raise LmtuneError(
            f"--host {host} would let other machines use the model without a key",
            hint="pass --api-key KEY (or LMTUNE_API_KEY) with a non-loopback --host, or keep --host 127.0.0.1",
        )
    if min(max_queue, max_batch, max_tokens, max_body_bytes) < 1:
        raise LmtuneError("--max-queue, --max-batch, --max-tokens and the body cap must be at least 1")
    registry = load_registry(list(sources), report, device)
    for row in registry.memory():
        adapters = row["adapter_bytes"]
        text = f"{', '.join(row['models'])}: base weights {row['base_bytes'] / 1e6:.2f} MB in memory once"
        if adapters:
            text += f", {len(adapters)} adapter(s) {sum(adapters.values()) / 1e6:.3f} MB in all"
        report(text)
    engine = Engine(max_queue=max_queue, max_batch=max_batch)
    limits = Limits(api_key=api_key, max_body_bytes=max_body_bytes, max_tokens=max_tokens,
                    default_max_tokens=min(128, max_tokens))  # fmt: skip
    app = create_app(registry, engine, limits)
    # SIGTERM: uvicorn stops accepting, lets in-flight requests finish (up to the grace period), then the app's
    # lifespan stops the engine.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
    return Server(uvicorn.Server(config), registry, engine)


def serve(sources: Sequence[str | Path], *, report: Reporter = _silent, **settings: object) -> None:
    """Serve until SIGTERM/Ctrl-C (see `build_server` for the settings)."""
    server = build_server(sources, report=report, **settings)  # type: ignore[arg-type]
    config = server.uvicorn.config
    report(f"serving {', '.join(server.registry.models)} on http://{config.host}:{config.port}/v1")
    server.uvicorn.run()
