"""Two processes (torchrun, gloo on CPU) train exactly like one process at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _losses(run_dir: Path) -> tuple[list[float], list[int], list[float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r["loss"] for r in records if r["split"] == "validation"]
    return [r["loss"] for r in train], [r["tokens"] for r in train], val


def test_two_processes_match_one_at_the_same_global_batch(tmp_path: Path) -> None:
    cfg = {
        "name": "ddp",
        "data": {
            "train": str(ROOT / "examples/quickstart/train.jsonl"),
            "validation": str(ROOT / "examples/quickstart/validation.jsonl"),
            "max_examples": 128,
        },
        "method": "full",
        "train": {"batch_size": 16, "lr": 3e-3, "max_steps": 4, "mixed_precision": "no"},
    }
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    two, one = tmp_path / "two", tmp_path / "one"
    # `--nproc 2` relaunches the command under torchrun (the same as `torchrun --nproc_per_node 2 -m lmtune ...`).
    lmtune = [sys.executable, "-m", "lmtune", "train", str(config)]
    subprocess.run([*lmtune, "--nproc", "2", "-o", str(two)], env=env, check=True, timeout=300)
    subprocess.run(
        [sys.executable, "-m", "lmtune", "train", str(config), "-o", str(one), "--set", "train.batch_size=32"],
        env=env,
        check=True,
        timeout=300,
    )
    loss2, tokens2, val2 = _losses(two)
    loss1, tokens1, val1 = _losses(one)
    assert len(loss2) == len(loss1) == 4  # one metrics line per step: only the main process writes
    assert tokens2 == tokens1  # the global step covers the same target tokens
    for a, b in zip(loss2 + val2, loss1 + val1, strict=True):
        assert abs(a - b) <= 1e-4 * abs(b)
