"""Tiny finished runs for the export, chat and serve tests, made once per session with `lmtune.finetune`."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support import chat_record, write_jsonl

from lmtune.api import finetune

PRESET = "preset:tiny-chat"
METHODS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "dora": {"name": "dora", "r": 4, "alpha": 8, "dropout": 0.0},
    "ia3": {"name": "ia3"},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 4},
    "adapters": {"name": "adapters", "bottleneck": 8},
}
WORDS = ["cat", "dog", "sun", "tree", "boat", "bird", "fish", "star"]


def _rows(task: str, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    if task == "sft":
        return [chat_record(i + seed * 100) for i in range(n)]
    rows = []
    for _ in range(n):
        a, b = rng.sample(WORDS, 2)
        if task == "causal_lm":
            rows.append({"text": f"Once upon a time the {a} met the {b}. The {b} was kind, and they were friends."})
        elif task == "seq2seq":
            rows.append({"prompt": f"Say the second word: {a} {b}", "completion": b})
        else:
            good = rng.random() < 0.5
            rows.append({"text": f"the {a} is {'good' if good else 'bad'}", "label": "pos" if good else "neg"})
    return rows


@pytest.fixture(scope="session")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_run(task, method, model, seed=0, lr=3e-3) -> a finished run directory (cached per arguments)."""
    root = tmp_path_factory.mktemp("ship-runs")
    made: dict[tuple, Path] = {}

    def make(task: str, method: str, model: str = PRESET, *, seed: int = 0, lr: float = 1e-2, steps: int = 3) -> Path:
        key = (task, method, model, seed, lr, steps)
        if key not in made:
            run = root / f"run{len(made)}-{task}-{method}"
            train = write_jsonl(root / f"{run.name}-train.jsonl", _rows(task, 24, seed))
            val = write_jsonl(root / f"{run.name}-val.jsonl", _rows(task, 8, seed + 1))
            cfg = {
                "task": task,
                "seed": seed,
                "model": {"name": model},
                "output_dir": str(run),
                "method": METHODS[method],
                "data": {"train": str(train), "validation": str(val), "max_length": 64, "packing": False},
                "forgetting": {"measure": False},
                "train": {"lr": lr, "batch_size": 8, "max_steps": steps, "mixed_precision": "no", "warmup_steps": 0},
            }
            finetune(cfg)
            made[key] = run
        return made[key]

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serving(sources: list[Path], **settings: Any) -> Iterator[tuple[Any, str]]:
    from lmtune.serve import build_server

    server = build_server(sources, port=free_port(), **settings)
    thread = threading.Thread(target=server.uvicorn.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.uvicorn.started and time.monotonic() < deadline:
        assert thread.is_alive(), "the server thread ended before it started"
        time.sleep(0.05)
    assert server.uvicorn.started
    try:
        yield server, f"http://127.0.0.1:{server.uvicorn.config.port}/v1"
    finally:
        server.uvicorn.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def serving() -> Callable[..., Any]:
    """`with serving(sources, **build_server settings) as (server, url)`: a server on a free loopback port, in a
    thread, stopped after the block."""
    return _serving


@pytest.fixture(scope="session")
def port() -> Callable[[], int]:
    return free_port
