"""End-to-end tests of the `lmtune` command (lmtune/cli/), run the way a user runs it: the train -> rerun ->
overwrite -> resume -> generate flow runs `python -m lmtune.cli` in a subprocess, so it checks exit codes and what a
user sees on stdout and stderr; data preview and config in-process through `lmtune.cli.main`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import yaml
from support import assert_clean_error, chat_record, run_main
from support import run_cli as lmtune_cli

HELD_OUT = re.compile(r"held-out loss before training: (\d+\.\d+)\s+after: (\d+\.\d+)")


# --- train, rerun, overwrite, resume ------------------------------------------------------------


def test_train_prints_the_held_out_loss_and_writes_the_run(trained):
    run, proc = trained
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Setting accelerator" not in proc.stderr  # DeepSpeed's probe, told the accelerator (train/launch.py)
    match = HELD_OUT.search(proc.stdout)
    assert match, proc.stdout
    before, after = map(float, match.groups())
    assert after < before
    assert f"run directory: {run.name}" in proc.stdout
    for name in ("config.yaml", "data.json", "env.json", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    assert (run / "final" / "model.safetensors").is_file()
    assert (run / "checkpoints" / "step-000003" / "trainable.safetensors").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3
    assert summary["val_loss_before"] == pytest.approx(before, abs=1e-4)
    assert summary["val_loss_after"] == pytest.approx(after, abs=1e-4)


def test_rerun_is_refused_then_overwrite_and_resume_work(trained, tmp_path):
    src, proc = trained
    assert proc.returncode == 0, proc.stderr
    shutil.copy(src.parent / "cfg.yaml", tmp_path / "cfg.yaml")
    shutil.copytree(src, tmp_path / "run")
    run = tmp_path / "run"
    summary = (run / "summary.json").read_text()

    again = lmtune_cli("train", "cfg.yaml", "-o", "run", "--set", "train.max_steps=3", cwd=tmp_path)
    assert again.returncode != 0
    assert_clean_error(again.stderr, "already exists", "--resume", "--overwrite")
    assert (run / "summary.json").read_text() == summary  # untouched

    # Resuming a finished run with the same settings finds nothing left to do and keeps the run's history.
    resumed = lmtune_cli("train", "cfg.yaml", "-o", "run", "--set", "train.max_steps=3", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    assert json.loads((run / "summary.json").read_text()) == json.loads(summary)
    assert "held-out loss before training" in resumed.stdout

    # Resuming with other settings is refused, and says how to resume properly.
    changed = lmtune_cli("train", "cfg.yaml", "-o", "run", "--set", "train.max_steps=5", "--resume", cwd=tmp_path)
    assert changed.returncode == 2
    assert_clean_error(changed.stderr, "config differs", "config.yaml --resume")

    (run / "stale.txt").write_text("left over")
    over = lmtune_cli("train", "cfg.yaml", "-o", "run", "--set", "train.max_steps=2", "--overwrite", cwd=tmp_path)
    assert over.returncode == 0, over.stderr
    assert not (run / "stale.txt").exists()
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert "run directory:" in over.stdout


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(workspace, tmp_path):
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    args = ["train", workspace / "cfg.yaml", "-o", tmp_path / "run", "--set", "train.max_steps=100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtune.cli", *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = b""
    try:
        while b"train:" not in seen:  # the progress bar shows once the loop (and its Ctrl-C handler) runs
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    stderr = (seen + err).decode("utf-8", errors="replace")
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    match = re.search(r"stopped after step (\d+) and saved its checkpoint.*--resume", stderr)
    assert match, stderr[-3000:]
    step = int(match.group(1))
    ckpt = tmp_path / "run" / "checkpoints" / f"step-{step:06d}"
    assert json.loads((ckpt / "loop_state.json").read_text())["step"] == step


# --- generate -----------------------------------------------------------------------------------


def test_generate_from_a_prompt_and_from_messages(trained, tmp_path):
    run, proc = trained
    assert proc.returncode == 0, proc.stderr
    # Three steps leave the model near random; sampling (seeded) makes sure it prints visible text.
    sampling = ("--temperature", "1.0", "--seed", "0", "--max-new-tokens", "12")
    gen = lmtune_cli("generate", run, "--prompt", "What is 3 plus 4?", *sampling, cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.strip()

    messages = tmp_path / "chat.json"
    messages.write_text(
        json.dumps(
            [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "What is 2 plus 2?"},
            ]
        ),
        encoding="utf-8",
    )
    gen = lmtune_cli("generate", run, "--messages", messages, *sampling, cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.strip()


def test_generate_with_bad_messages_is_a_clean_error(trained, tmp_path, monkeypatch, capsys):
    run, _ = trained
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"role": "robot", "content": "hi"}]), encoding="utf-8")
    code, _, err = run_main(monkeypatch, capsys, "generate", run, "--messages", bad)
    assert code == 2
    assert_clean_error(err, "bad.json", "messages[0]", "role")


# --- data preview and config --------------------------------------------------------------------


def test_data_preview_marks_only_the_assistant_text(workspace):
    proc = lmtune_cli("data", "preview", "cfg.yaml", "-n", "2", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "chat.jsonl:1" in out and "chat.jsonl:2" in out and "chat.jsonl:3" not in out
    marked = [m for m in re.findall(r"⟦(.*?)⟧", out, flags=re.S) if m != "…"]
    assert len(marked) == 2
    for i, text in enumerate(marked):
        answer = chat_record(i)["messages"][2]["content"]
        assert text.startswith(answer), text
        # Only the answer and the end-of-turn marker are trained: no prompt, no system text, no role header.
        rest = text.removeprefix(answer)
        assert "What is" not in rest and "concise" not in rest and "assistant" not in rest and "user" not in rest
    # The context (system prompt and question) is shown, outside the markers.
    assert "You are a concise assistant." in out and "What is 1 plus 2?" in out


def test_config_docs_lists_every_key(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "config", "docs")
    assert code == 0
    for key in ("train.lr", "data.train", "data.packing", "method.r", "model.name"):
        assert key in out, key


def test_config_show_applies_overrides(workspace, monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "config", "show", workspace / "cfg.yaml", "--set", "train.lr=0.001")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["train"]["lr"] == 0.001
    assert shown["train"]["batch_size"] == 4  # from the file
    assert shown["train"]["epochs"] == 1  # a default, written out
