"""Acceptance on real weights: DPO with LoRA on Karpathy's stories260K moves its preferences the right way.

The model lives outside the repository at ../shared/models/stories260K; the tests that need it skip without it.
The fast test takes a few steps through the Python API; the slow one runs the shipped config through the CLI
exactly as its first line says (from the repository root, as its relative paths expect).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import REPO, run_cli

from lmtune.api import finetune
from lmtune.config import load_config

MODEL = (REPO / "../shared/models/stories260K").resolve()
CONFIG = REPO / "configs" / "stories260k-dpo.yaml"
DATA = REPO / "examples" / "stories-dpo"

needs_model = pytest.mark.skipif(
    not (MODEL / "config.json").is_file(), reason=f"the stories260K model is not at {MODEL} (no download)"
)


def test_the_config_is_headed_by_its_command_and_reads_the_shipped_pairs() -> None:
    assert CONFIG.read_text(encoding="utf-8").splitlines()[0] == "# lmtune train configs/stories260k-dpo.yaml"
    cfg = load_config(CONFIG)
    assert cfg.task == "dpo" and cfg.method.name == "lora" and cfg.preference.beta == 0.1
    assert (REPO / cfg.model.name).resolve() == MODEL
    assert Path(cfg.data.train) == DATA / "train.jsonl" and Path(cfg.data.validation) == DATA / "validation.jsonl"


def test_the_pairs_are_what_their_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_pairs", DATA / "make_pairs.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    train, validation = module.make()
    assert (len(train), len(validation)) == (400, 60)
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in validation}
    for name, rows in (("train", train), ("validation", validation)):
        lines = (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == rows, f"{name}.jsonl is stale: rerun the generator"


@needs_model
def test_a_few_dpo_steps_on_stories260k_move_the_preferences(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository root
    overrides = ["data.max_examples=48", "train.max_steps=3", "train.batch_size=16", "train.lr=1e-3",
                 "train.eval_every=null", "train.save_every=null", "train.eval_batch_size=30"]  # fmt: skip
    s = finetune(CONFIG, overrides=overrides, output_dir=str(tmp_path / "run")).summary
    assert s["steps"] == 3
    assert s["val_loss_before"] == pytest.approx(0.6931, abs=1e-3)  # the policy is its own reference: log 2
    assert s["val_loss_after"] < 0.6 and s["val_margin_after"] > 0.1
    assert s["val_accuracy_after"] >= 0.8 > s["val_accuracy_before"]
    assert s["reference"] == "adapter disabled (implicit)"
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()


@pytest.mark.slow
@needs_model
def test_stories260k_dpo_prefers_the_kind_continuations(tmp_path: Path) -> None:
    run = tmp_path / "stories-dpo"
    proc = run_cli("train", CONFIG.relative_to(REPO), "-o", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"preference accuracy (\d\.\d+) -> (\d\.\d+), reward margin (\d\.\d+) -> (\d+\.\d+)", proc.stderr)
    assert match, proc.stderr[-3000:]
    acc_before, acc_after, margin_before, margin_after = map(float, match.groups())
    s = json.loads((run / "summary.json").read_text())
    assert s["val_loss_after"] < 0.2 * s["val_loss_before"]
    assert acc_after >= 0.95 > acc_before and margin_after > margin_before + 1.0
    print(
        f"stories260K + DPO/LoRA: loss {s['val_loss_before']:.4f} -> {s['val_loss_after']:.4f}, accuracy "
        f"{acc_before:.2f} -> {acc_after:.2f}, margin {margin_before:.2f} -> {margin_after:.2f} in "
        f"{s['train_time_s']:.0f}s"
    )
    gen = run_cli("generate", run, "--prompt", "Once upon a time, there was a little child named Lily.")
    assert gen.returncode == 0 and gen.stdout.strip(), gen.stderr[-3000:]
