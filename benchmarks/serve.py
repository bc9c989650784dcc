"""`lmtune serve` under load: 64 chat requests from 8 concurrent clients against the same 64 sent one at a time,
through the official openai client over loopback. Prints requests/s, completion tokens/s and p50/p95 latency.

    python benchmarks/serve.py                       # trains a small LoRA run on preset:tiny-chat first
    python benchmarks/serve.py --run runs/NAME       # an existing run (or exported model directory)
    python benchmarks/serve.py --json                # ... ending with one JSON line of the figures
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tiny_run(root: Path) -> Path:
    """Two steps only: a model that has not yet learnt to end its answers early writes max_tokens tokens, so the
    figures measure generation rather than a handful of tokens per request."""
    import lmtune

    rows = []
    for i in range(64):
        a, b = i % 7 + 1, i % 5 + 2
        rows.append({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                  {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]})  # fmt: skip
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = {
        "model": {"name": "preset:tiny-chat"},
        "output_dir": str(root / "bench-lora"),
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "data": {"train": str(data), "val_fraction": 0.1, "max_length": 64},
        "forgetting": {"measure": False},
        "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-3, "mixed_precision": "no"},
    }
    return lmtune.finetune(cfg).run_dir


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(client: Any, model: str, prompts: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    latencies: list[float] = []
    tokens = failed = 0
    lock = threading.Lock()

    def one(prompt: str) -> None:
        nonlocal tokens, failed
        start = time.perf_counter()
        try:
            r = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0
            )
        except Exception:
            with lock:
                failed += 1
            return
        with lock:
            latencies.append(time.perf_counter() - start)
            tokens += r.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"clients": clients, "requests": len(prompts), "failed": failed, "seconds": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "p50_s": round(statistics.median(latencies), 3), "p95_s": round(q[18], 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run or model directory (default: train a tiny LoRA run)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import openai
    import torch

    from lmtune.serve import build_server

    torch.set_num_threads(1)  # the tiny model is fastest on one thread; batching, not threads, is measured
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or _tiny_run(Path(tmp))
        port = _port()
        server = build_server([run], port=port, max_queue=max(64, args.requests), max_batch=args.clients)
        thread = threading.Thread(target=server.uvicorn.run, daemon=True)
        thread.start()
        while not server.uvicorn.started:
            time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=300)
        prompts = [f"What is {i % 9 + 1} plus {i % 7 + 2}?" for i in range(args.requests)]
        _measure(client, run.name, prompts[:4], 1, args.max_tokens)  # warm-up
        sequential = _measure(client, run.name, prompts, 1, args.max_tokens)
        concurrent = _measure(client, run.name, prompts, args.clients, args.max_tokens)
        server.uvicorn.should_exit = True
        thread.join(timeout=30)
    print(f"{'':12}{'req/s':>8}{'tok/s':>9}{'p50 s':>8}{'p95 s':>8}{'failed':>8}")
    for label, r in (("sequential", sequential), (f"{args.clients} clients", concurrent)):
        print(
            f"{label:12}{r['requests_per_s']:8.2f}{r['tokens_per_s']:9.1f}{r['p50_s']:8.3f}{r['p95_s']:8.3f}{r['failed']:8}"
        )
    speedup = concurrent["tokens_per_s"] / max(sequential["tokens_per_s"], 1e-9)
    print(f"batched / sequential tokens/s: {speedup:.2f}x (batches run: {server.engine.batches})")
    if args.json:
        print(json.dumps({"sequential": sequential, "concurrent": concurrent, "speedup": round(speedup, 2)}))


if __name__ == "__main__":
    main()
