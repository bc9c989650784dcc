"""What the service tests share: the key, the few-step job settings, a server in a thread, waiting."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

KEY = "sk-test-key-18"
# lmtune's own settings for a few-step job on the preset (the `lmtune` extension field of a job).
TINY = {
    "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "train": {"max_steps": 4, "save_every": 2, "lr": 5e-2, "mixed_precision": "no", "warmup_steps": 0},
    "data": {"max_length": 64, "packing": False},
    "forgetting": {"measure": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_service(store: Path, **settings: Any) -> Iterator[Any]:
    """`lmtune server` on a free loopback port in a thread; `.url` is its address."""
    from lmtune.service import build_service

    service = build_service(store, port=free_port(), **settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not service.uvicorn.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.uvicorn.started
    service.url = f"http://127.0.0.1:{service.uvicorn.config.port}"
    try:
        yield service
    finally:
        service.uvicorn.should_exit = True
        thread.join(timeout=60)


def wait_for(check: Callable[[], Any], timeout: float = 120, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"gave up waiting after {timeout} s")
