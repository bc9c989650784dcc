"""Kill -9 `lmtune server` mid-job and start it again: the running job resumes from its last checkpoint, the queued
one stays queued, nothing is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import openai
import pytest
from service_support import KEY, TINY, free_port, wait_for


def start_server(store: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lmtune", "server", "--dir", str(store), "--port", str(port), "--api-key", KEY]
    with log.open("ab") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def up() -> bool:
        assert server.poll() is None, log.read_text()
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/models",
                                                          headers={"Authorization": f"Bearer {KEY}"}), timeout=2)  # fmt: skip
            return True
        except OSError:
            return False

    wait_for(up, timeout=60, every=0.2)
    return server


@pytest.mark.slow
def test_kill9_mid_job_then_restart_resumes(tmp_path, chat_files) -> None:
    store, port, log = tmp_path / "store", free_port(), tmp_path / "server.log"
    server = start_server(store, port, log)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=30)
    try:
        file_id = client.files.create(file=chat_files["train"].open("rb"), purpose="fine-tune").id
        settings = {**TINY, "train": {**TINY["train"], "max_steps": 40, "save_every": 2}}
        job = client.fine_tuning.jobs.create(model="preset:tiny-chat", training_file=file_id,
                                             extra_body={"lmtune": settings})  # fmt: skip
        second = client.fine_tuning.jobs.create(model="preset:tiny-chat", training_file=file_id,
                                                extra_body={"lmtune": TINY})  # fmt: skip
        wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, every=0.05)
        server.kill()  # SIGKILL: no shutdown code runs in the server
        server.wait()
        server = start_server(store, port, log)
        assert client.fine_tuning.jobs.retrieve(second.id).status == "queued"
        done = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j,
                        timeout=240)  # fmt: skip
        assert done.status == "succeeded", done.error
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data[::-1]
        resumed = [e.message for e in events if e.message.startswith("Resuming from checkpoint")]
        assert resumed, [e.message for e in events]
        steps = [e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data]
        assert sorted(set(steps)) == list(range(1, 41))
        paused = int(resumed[0].rsplit("-", 1)[1])
        assert 0 < paused < 40 and steps[paused:] == list(range(paused + 1, 41))  # on from the checkpoint
        assert client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                              messages=[{"role": "user", "content": "hi"}]).choices  # fmt: skip
        client.fine_tuning.jobs.cancel(second.id)
    finally:
        server.kill()
        server.wait()
