"""Two processes (torchrun, gloo on CPU) train exactly like one process at the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _losses(run_dir: Path) -> tuple[list[float], list[int], list[float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r["loss"] for r in records if r["split"] == "validation"]
    return [r["loss"] for r in train], [r["tokens"] for r in train], val


def _grad_norms(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["grad_norm"] for r in records if r["split"] == "train"]


def _config(tmp_path: Path) -> Path:
    cfg = {
        "name": "ddp",
        "data": {
            "train": str(ROOT / "examples/quickstart/train.jsonl"),
            "validation": str(ROOT / "examples/quickstart/validation.jsonl"),
            "max_examples": 128,
        },
        "method": "full",
        "train": {"batch_size": 16, "lr": 3e-3, "max_steps": 4, "mixed_precision": "no", "save_every": 2},
    }
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return config


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_two_processes_match_one_at_the_same_global_batch(tmp_path: Path) -> None:
    config, env = _config(tmp_path), ENV
    two, one = tmp_path / "two", tmp_path / "one"
    # `--nproc 2` relaunches the command under torchrun (the same as `torchrun --nproc_per_node 2 -m lmtune ...`).
    lmtune = [sys.executable, "-m", "lmtune", "train", str(config)]
    subprocess.run([*lmtune, "--nproc", "2", "-o", str(two)], env=env, check=True, timeout=300)
    # One process accumulates the two micro-batches of 16 the two processes take one each of.
    subprocess.run(
        [sys.executable, "-m", "lmtune", "train", str(config), "-o", str(one), "--set", "train.grad_accum=2"],
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

    # The two-process run resumes on one process from its step-2 checkpoint (as if it had crashed after it): one
    # process accumulates both micro-batches of each step, and steps 3-4 come out as the two processes made them.
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-000004")
    out = subprocess.run(
        [*lmtune, "-o", str(resumed), "--resume"], env=env, check=True, timeout=300, capture_output=True, text=True
    )
    assert "train.grad_accum 1 -> 2" in out.stderr
    loss_r, tokens_r, val_r = _losses(resumed)
    assert tokens_r == tokens2
    for a, b in zip(loss_r + val_r, loss2 + val2, strict=True):
        assert abs(a - b) <= 1e-4 * abs(b)


def test_accelerate_launch_with_the_deepspeed_config_matches_one_process(tmp_path: Path) -> None:
    """The shipped ZeRO-3 config, on 2 CPU processes in fp32, through `accelerate launch`: the same losses as one
    process at the same global batch, and its checkpoint resumes without DeepSpeed."""
    pytest.importorskip("deepspeed")
    config = _config(tmp_path)
    launch = yaml.safe_load((ROOT / "configs/accelerate/deepspeed-zero3-8gpu.yaml").read_text())
    launch.update(num_processes=2, mixed_precision="no")
    launch_file = tmp_path / "zero3-2cpu.yaml"
    launch_file.write_text(yaml.safe_dump(launch), encoding="utf-8")
    zero3, one, resumed = tmp_path / "zero3", tmp_path / "one", tmp_path / "resumed"
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_file)]
    lmtune = ["-m", "lmtune", "train", str(config)]
    subprocess.run([*accelerate, *lmtune, "-o", str(zero3)], env=ENV, check=True, timeout=300)
    subprocess.run([sys.executable, *lmtune, "-o", str(one), "--set", "train.grad_accum=2"], env=ENV, check=True, timeout=300)  # fmt: skip
    env = json.loads((zero3 / "env.json").read_text())["launch"]
    assert env == {"distributed_type": "DEEPSPEED", "processes": 2, "mixed_precision": "no", "zero_stage": 3}
    loss3, tokens3, val3 = _losses(zero3)
    loss1, tokens1, val1 = _losses(one)
    assert tokens3 == tokens1
    for a, b in zip(loss3 + val3, loss1 + val1, strict=True):
        assert abs(a - b) <= 1e-4 * abs(b)
    # DeepSpeed clipped at train.max_grad_norm (1.0, the default) the gradient norms torch's clipping reports.
    norms3, norms1 = _grad_norms(zero3), _grad_norms(one)
    assert min(norms1) > 1.0 and all(abs(a - b) <= 1e-4 * b for a, b in zip(norms3, norms1, strict=True))
    # Resumed on one plain process from the ZeRO-3 run's step-2 checkpoint: steps 3-4 as ZeRO-3 made them.
    shutil.copytree(zero3, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-000004")
    subprocess.run([sys.executable, *lmtune, "-o", str(resumed), "--resume"], env=ENV, check=True, timeout=300)
    loss_r, _, val_r = _losses(resumed)
    for a, b in zip(loss_r + val_r, loss3 + val3, strict=True):
        assert abs(a - b) <= 1e-4 * abs(b)


def test_shipped_accelerate_configs_load() -> None:
    """The example launch configs of the README (1 GPU, 8 GPUs DDP/FSDP/DeepSpeed, multi-node) are valid."""
    from accelerate.commands.config.config_args import load_config_from_file

    found = {p.name: load_config_from_file(str(p)) for p in sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))}
    kinds = {name: (c.distributed_type.value, c.num_processes, c.num_machines) for name, c in found.items()}
    assert kinds == {
        "1gpu.yaml": ("NO", 1, 1),
        "ddp-8gpu.yaml": ("MULTI_GPU", 8, 1),
        "deepspeed-zero3-8gpu.yaml": ("DEEPSPEED", 8, 1),
        "fsdp-8gpu.yaml": ("FSDP", 8, 1),
        "multinode-2x8gpu.yaml": ("MULTI_GPU", 16, 2),
    }
    assert found["fsdp-8gpu.yaml"].fsdp_config["fsdp_version"] == 2
    assert found["deepspeed-zero3-8gpu.yaml"].deepspeed_config["zero_stage"] == 3


@pytest.mark.parametrize("method", ["lora", pytest.param("full", marks=pytest.mark.slow)])
def test_dpo_on_two_processes_matches_one(tmp_path: Path, method: str) -> None:
    """DPO on lmtune's loop under `--nproc 2` (DDP): the same losses, preference accuracy and validation as one
    process accumulating the same global batch; the reference is the adapter switched off (lora) or log-probs
    precomputed before training (full), on every process."""
    cfg = {
        "task": "dpo",
        "method": {"name": method, **({"dropout": 0.0} if method == "lora" else {})},  # no random masks
        "data": {
            "train": str(ROOT / "examples/stories-dpo/train.jsonl"),
            "validation": str(ROOT / "examples/stories-dpo/validation.jsonl"),
            "max_examples": 64,
            "max_length": 128,
        },
        "forgetting": {"measure": False},
        "train": {"batch_size": 8, "lr": 5e-3, "max_steps": 3, "mixed_precision": "no", "fast_dropout": False},
    }
    config = tmp_path / "dpo.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    two, one = tmp_path / "two", tmp_path / "one"
    lmtune = [sys.executable, "-m", "lmtune", "train", str(config)]
    subprocess.run([*lmtune, "--nproc", "2", "-o", str(two)], env=ENV, check=True, timeout=300)
    subprocess.run([*lmtune, "-o", str(one), "--set", "train.grad_accum=2"], env=ENV, check=True, timeout=300)
    loss2, pairs2, val2 = _losses(two)
    loss1, pairs1, val1 = _losses(one)
    assert pairs2 == pairs1 == [16, 32, 48]  # trained units are pairs: 16 per step over both processes
    assert loss2 == pytest.approx(loss1, abs=1e-4)
    assert val2 == pytest.approx(val1, abs=1e-4)
    summary2 = json.loads((two / "summary.json").read_text())
    summary1 = json.loads((one / "summary.json").read_text())
    assert summary2["val_accuracy_after"] == pytest.approx(summary1["val_accuracy_after"], abs=1e-6)
