"""Fixtures of the command-line tests: a workspace with chat data and a config, and a run trained once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import chat_record, write_config, write_jsonl
from support import run_cli as lmtune_cli


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    data = write_jsonl(root / "chat.jsonl", [chat_record(i) for i in range(40)])
    write_config(root / "cfg.yaml", data)
    return root


@pytest.fixture(scope="module")
def trained(workspace) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`lmtune train cfg.yaml -o run --set train.max_steps=3`, once for the module."""
    proc = lmtune_cli("train", "cfg.yaml", "-o", "run", "--set", "train.max_steps=3", cwd=workspace)
    return workspace / "run", proc
