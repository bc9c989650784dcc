"""Helpers shared by the test modules (importable because pyproject puts tests/ on pytest's pythonpath)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


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
