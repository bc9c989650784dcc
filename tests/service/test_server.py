"""`lmtune server` driven by the official openai client: upload, job, events, checkpoints, chat with the ft: model;
a bad file fails in validation naming the line; cancel within a step; the key; OpenAI's error cases."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import openai
import pytest
from service_support import KEY, TINY, wait_for

from lmtune.errors import LmtuneError
from lmtune.service import build_service

DONE = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def client(service) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def uploaded(client, chat_files) -> dict[str, str]:
    return {k: client.files.create(file=p.open("rb"), purpose="fine-tune").id for k, p in chat_files.items()}


def finished(client, job_id: str):
    return wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in DONE and j, timeout=180)


def test_upload_train_events_checkpoints_then_chat(client, uploaded, chat_files) -> None:
    assert client.files.retrieve(uploaded["train"]).bytes == chat_files["train"].stat().st_size
    assert client.files.content(uploaded["train"]).content == chat_files["train"].read_bytes()
    start = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model="preset:tiny-chat", training_file=uploaded["train"], validation_file=uploaded["validation"],
        suffix="adder", seed=3, method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8}}},
        extra_body={"lmtune": TINY},
    )  # fmt: skip
    assert job.status == "validating_files" and job.hyperparameters.batch_size == 8
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status in ("running", *DONE), every=0.05)
    print(f"create -> running: {time.monotonic() - start:.2f} s")
    done = finished(client, job.id)
    print(f"create -> succeeded: {time.monotonic() - start:.2f} s")
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:preset:tiny-chat:adder:{job.id.removeprefix('ftjob-')}"
    assert done.trained_tokens > 0

    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data[::-1]  # newest first, as OpenAI
    messages = [e.message for e in events]
    assert messages[0].startswith("Created fine-tuning job") and messages[-1] == "The job has successfully completed"
    steps = [e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert steps == [1, 2, 3, 4]
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    older = client.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id).data
    assert [e.id for e in older] == [e.id for e in events[-4:-2][::-1]]

    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in ckpts] == [4, 2]
    step4 = next(e.data["train_loss"] for e in events if e.type == "metrics" and e.data.get("step") == 4)
    assert ckpts[0].metrics.train_loss == pytest.approx(step4)

    csv = client.files.content(done.result_files[0]).text.splitlines()
    assert csv[0] == "step,train_loss,valid_loss,train_tokens" and len(csv) >= 5

    assert done.fine_tuned_model in {m.id for m in client.models.list().data}
    reply = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "What is 2 plus 3?"}], max_tokens=6
    )
    assert reply.choices[0].message.content and reply.usage.completion_tokens <= 6


def test_bad_file_fails_in_validation_naming_line_and_field(client, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    bad.write_text(good + "\n" + good + "\n" + json.dumps({"messages": "not a list"}) + "\n")
    file_id = client.files.create(file=bad.open("rb"), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="preset:tiny-chat", training_file=file_id, extra_body={"lmtune": TINY})
    done = finished(client, job.id)
    assert done.status == "failed" and done.error.code == "invalid_training_file"
    assert done.error.param == "training_file"
    assert "training_file line 3, field 'messages'" in done.error.message, done.error.message
    assert str(bad) not in done.error.message  # the server's paths stay on the server


def test_cancel_stops_within_one_step(client, uploaded) -> None:
    long = {**TINY, "train": {**TINY["train"], "max_steps": 10_000, "save_every": None}}
    job = client.fine_tuning.jobs.create(model="preset:tiny-chat", training_file=uploaded["train"],
                                         extra_body={"lmtune": long})  # fmt: skip

    def step_events():
        return [e for e in client.fine_tuning.jobs.list_events(job.id, limit=5).data if e.type == "metrics"]

    wait_for(step_events, every=0.05)
    assert client.fine_tuning.jobs.cancel(job.id).status == "running"  # stops after the step it is in
    done = finished(client, job.id)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    last = max(e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data
               if e.type == "metrics")  # fmt: skip
    (ckpt,) = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert ckpt.step_number == last < 10_000  # the checkpoint of the step it stopped after
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(job.id)


def test_key_on_every_route(service, uploaded) -> None:
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=service.url + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.files.list()
        with pytest.raises(openai.AuthenticationError):
            bad.fine_tuning.jobs.list()
    for path in ("/", "/v1/models", f"/v1/files/{uploaded['train']}/content", "/v1/fine_tuning/jobs"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(service.url + path, timeout=10)
        assert e.value.code == 401, path


def test_error_cases(client, service, uploaded, tmp_path) -> None:
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-doesnotexist0")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("../../etc/passwd")
    req = urllib.request.Request(service.url + "/v1/files/..%2F..%2Flmtune.sqlite/content",
                                 headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 404
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"x" * (65 << 10))
    with pytest.raises(openai.APIStatusError) as e:
        client.files.create(file=big.open("rb"), purpose="fine-tune")
    assert e.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="assistants")
    create = client.fine_tuning.jobs.create
    with pytest.raises(openai.NotFoundError):
        create(model="preset:tiny-chat", training_file="file-00000000nothere")
    with pytest.raises(openai.UnprocessableEntityError):
        create(model="preset:tiny-chat", training_file=uploaded["train"], hyperparameters={"n_epochs": "many"})
    with pytest.raises(openai.BadRequestError, match="epochs"):
        create(model="preset:tiny-chat", training_file=uploaded["train"], hyperparameters={"n_epochs": 0})
    with pytest.raises(openai.BadRequestError, match="output_dir"):
        create(model="preset:tiny-chat", training_file=uploaded["train"], extra_body={"lmtune": {"output_dir": "/"}})
    with pytest.raises(openai.BadRequestError, match=r"data\.train"):
        create(model="preset:tiny-chat", training_file=uploaded["train"],
               extra_body={"lmtune": {"data": {"train": "/etc/passwd"}}})  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="suffix"):
        create(model="preset:tiny-chat", training_file=uploaded["train"], suffix="../x")
    jobs = [create(model="no-such/model-xyz", training_file=uploaded["train"]).id for _ in range(2)]
    failed = finished(client, jobs[0])
    assert failed.status == "failed" and "no-such/model-xyz" in failed.error.message, failed.error
    page = client.fine_tuning.jobs.list(limit=1)
    assert page.data[0].id == jobs[1]
    assert len(page.data) == 1 and page.has_more
    rest = client.fine_tuning.jobs.list(limit=100, after=page.data[0].id).data
    assert page.data[0].id not in {j.id for j in rest} and rest


def test_public_host_needs_a_key(tmp_path) -> None:
    with pytest.raises(LmtuneError, match="without a key"):
        build_service(tmp_path / "s", host="0.0.0.0")
    assert not (tmp_path / "s").exists()
