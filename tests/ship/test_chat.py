"""`lmtune chat` with piped input: one answer a line, each seeing the conversation so far; /save, /reset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support import REPO

import lmtune
from lmtune.data.formats import Message
from lmtune.ship.chat import open_chat, run_command

FIRST, SECOND = "What is 3 plus 4?", "And 2 plus 5?"


def _chat(run, stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lmtune.cli", "chat", str(run), "--max-tokens", "12", *extra]
    return subprocess.run(cmd, input=stdin, env=env, capture_output=True, text=True, timeout=300)


def test_piped_chat_answers_line_by_line_with_the_history(tmp_path, make_run) -> None:
    run = make_run("sft", "full", seed=3)  # a full run's answers still depend on the context (LoRA's here loop)
    saved = tmp_path / "chat.json"
    done = _chat(run, f"{FIRST}\n{SECOND}\n/save {saved}\n/reset\n{SECOND}\n/exit\nnever asked\n")
    assert done.returncode == 0, done.stderr
    answers = done.stdout.split("\n")[:3]
    assert done.stdout.count("\n") == 3

    one = lmtune.generate(run, messages=[Message("user", FIRST)], max_new_tokens=12)
    two = lmtune.generate(
        run, messages=[Message("user", FIRST), Message("assistant", one), Message("user", SECOND)], max_new_tokens=12
    )
    alone = lmtune.generate(run, messages=[Message("user", SECOND)], max_new_tokens=12)
    print({"first": one, "second (with history)": two, "second alone": alone})
    assert answers == [one, two, alone]  # the second answer was rendered after the first turn; /reset forgot it
    assert two != alone
    messages = json.loads(saved.read_text())["messages"]
    assert [m["content"] for m in messages] == [FIRST, one, SECOND, two]


def test_system_prompt_and_commands(make_run, tmp_path) -> None:
    run = make_run("sft", "lora", seed=1, lr=5e-2, steps=6)
    session = open_chat(run, system="You are a concise assistant.", max_tokens=8)
    streamed: list[str] = []
    answer = session.ask(FIRST, on_text=streamed.append)
    assert "".join(streamed) == answer
    assert session.messages()[0] == {"role": "system", "content": "You are a concise assistant."}
    assert run_command(session, "/nope")[0] == "error"
    assert run_command(session, "/save")[0] == "error"
    assert run_command(session, "/reset") == ("info", "(conversation cleared)") and session.history == []
    assert run_command(session, "/exit")[0] == "exit"
