"""A config error is reported before anything heavy loads (issue 14): torch, transformers and deepspeed take
seconds to import, a typo in the config should take a moment to report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import REPO

PROBE = """
import sys
from lmtune import cli
sys.argv = ["lmtune", *sys.argv[1:]]
try:
    cli.main()
except SystemExit as exit_:
    code = exit_.code
print("exit", code, "heavy", sorted(m for m in ("torch", "transformers", "deepspeed", "peft") if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args",
    [
        ("train", "{config}", "--set", "train.lr=-1"),
        ("train", "{config}", "--set", "train.no_such_key=1"),
        ("data", "check", "{config}", "--set", "data.max_length=0"),
    ],
    ids=["train-bad-value", "train-unknown-key", "data-check-bad-value"],
)
def test_a_config_error_loads_no_heavy_library(tmp_path, args):
    config = tmp_path / "run.yaml"
    config.write_text("model: {name: 'preset:tiny-chat'}\ndata: {train: a.jsonl}\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    argv = [a.format(config=config) for a in args]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip().endswith("exit 2 heavy []"), done.stdout + done.stderr
    assert "invalid config" in done.stderr and "Traceback" not in done.stderr


def test_a_data_check_of_a_data_file_loads_no_torch(tmp_path):
    """`lmtune data check FILE` loads a tokenizer (transformers' tokenizer classes) but neither torch nor peft nor
    deepspeed: the registry, the tokenizer and the checks are all torch-free (lmtune.tokenizer)."""
    data = tmp_path / "ten.jsonl"
    data.write_text("".join(f'{{"prompt": "Question {i}?\\n", "completion": "Answer {i}."}}\n' for i in range(10)))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "data", "check", str(data)], capture_output=True, text=True, env=env, timeout=120
    )
    # transformers is there for the tokenizer classes only (its own import loads no torch)
    assert done.stdout.strip().endswith("exit 0 heavy ['transformers']"), done.stdout + done.stderr
    assert "0 errors" in done.stdout + done.stderr
