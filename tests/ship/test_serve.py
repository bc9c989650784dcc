"""`lmtune serve`, driven by the official openai client over loopback: two LoRA runs on ONE base copy, a full run,
streaming, batching and OpenAI's error shapes."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

import lmtune
from lmtune.errors import LmtuneError
from lmtune.serve import build_server
from lmtune.serve.engine import Engine, QueueFull

KEY = "test-key-123"
QUESTION = [{"role": "user", "content": "What is 3 plus 4?"}]


@pytest.fixture(scope="module")
def runs(make_run) -> dict[str, Path]:
    return {
        "a": make_run("sft", "lora", seed=1, lr=5e-2, steps=6),
        "b": make_run("sft", "lora", seed=2, lr=5e-2, steps=6),
        "full": make_run("sft", "full", seed=3),
    }


@pytest.fixture(scope="module")
def server(runs, serving):
    messages: list[str] = []
    with serving(
        list(runs.values()), api_key=KEY, max_queue=8, max_tokens=1000, max_body_bytes=8192,
        report=lambda text, warning=False: messages.append(text),
    ) as (srv, url):  # fmt: skip
        srv.messages = messages  # type: ignore[attr-defined]
        srv.url = url  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)


def names(runs):
    return {k: p.name for k, p in runs.items()}


def test_models_and_one_base_copy(server, client, runs) -> None:
    assert {m.id for m in client.models.list().data} == set(names(runs).values())
    assert len(server.registry.backends) == 2  # the two LoRA runs share one backend; the full run has its own
    shared = server.registry.backends[0]
    assert shared.adapters == [runs["a"].name, runs["b"].name]
    (row,) = [r for r in server.registry.memory() if r["adapter_bytes"]]
    print(f"one base {row['base_bytes'] / 1e6:.3f} MB + adapters {row['adapter_bytes']}")
    assert all(0 < b < row["base_bytes"] / 10 for b in row["adapter_bytes"].values())
    assert any("in memory once" in m for m in server.messages)


def test_each_adapter_answers_as_its_own_run(client, runs) -> None:
    answers = {}
    for key in ("a", "b", "full"):
        got = client.chat.completions.create(model=runs[key].name, messages=QUESTION, max_tokens=12, temperature=0)
        want = lmtune.generate(runs[key], messages=[lmtune_msg(m) for m in QUESTION], max_new_tokens=12)
        assert got.choices[0].message.content == want, key
        assert got.usage.completion_tokens <= 12 and got.usage.prompt_tokens > 0
        answers[key] = want
    print(answers)
    assert answers["a"] != answers["b"]


def lmtune_msg(m):
    from lmtune.data.formats import Message

    return Message(m["role"], m["content"])


def test_streamed_chat_equals_the_plain_answer(client, runs) -> None:
    name = runs["a"].name
    plain = client.chat.completions.create(model=name, messages=QUESTION, max_completion_tokens=10, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=name, messages=QUESTION, max_tokens=10, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_completions_stop_n_and_seed(client, runs) -> None:
    name = runs["full"].name
    full = client.completions.create(model=name, prompt="Once upon a time", max_tokens=16, temperature=0)
    text = full.choices[0].text
    assert full.choices[0].finish_reason in ("length", "stop") and full.usage.completion_tokens <= 16
    if len(text.strip()) > 2:
        stop = text.strip()[1:3]
        cut = client.completions.create(model=name, prompt="Once upon a time", max_tokens=16, temperature=0, stop=stop)
        assert cut.choices[0].text == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"
    kw = dict(model=name, prompt="Once", max_tokens=8, temperature=1.0, top_p=0.9, seed=5, n=3)
    one, two = client.completions.create(**kw), client.completions.create(**kw)
    assert len(one.choices) == 3 and [c.text for c in one.choices] == [c.text for c in two.choices]
    streamed = client.completions.create(
        model=name, prompt="Once upon a time", max_tokens=16, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text


def test_concurrent_requests_are_batched(server, client, runs) -> None:
    before = server.engine.batches
    prompts = [f"Tell me about {w}" for w in ("cats", "dogs", "suns", "trees", "boats", "birds", "fish", "stars")]

    def ask(p):
        return client.completions.create(model=runs["b"].name, prompt=p, max_tokens=24, temperature=0).choices[0].text

    with ThreadPoolExecutor(8) as pool:
        batched = list(pool.map(ask, prompts))
    assert server.engine.batches - before < len(prompts)  # some requests shared a generate call
    assert batched == [ask(p) for p in prompts]  # and got the answers they get alone


def _raw(server, path: str, body: bytes | None, key: str | None = KEY) -> tuple[int, dict, dict]:
    req = urllib.request.Request(server.url + path, data=body, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def test_errors_have_openai_status_and_shape(server, client, runs) -> None:
    name = runs["a"].name
    bad_key = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=QUESTION)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=name, messages=QUESTION, temperature=5)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model=name, messages=QUESTION, max_tokens=999)
    with pytest.raises(openai.BadRequestError, match="cap"):
        client.chat.completions.create(model=name, messages=QUESTION, max_tokens=5000)
    status, body, _ = _raw(server, "/chat/completions", b"{not json")
    assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    big = json.dumps({"model": name, "messages": [{"role": "user", "content": "x" * 10000}]}).encode()
    assert _raw(server, "/chat/completions", big)[0] == 413
    status, body, headers = _raw(server, "/completions", json.dumps({"model": name, "prompt": "a", "n": 9}).encode())
    assert status == 503 and headers.get("retry-after") == "1" and body["error"]["code"] == "queue_full"
    status, body, _ = _raw(server, "/models", None, key=None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body, _ = _raw(server, "/nowhere", None)
    assert status == 404 and body["error"]["type"] == "not_found_error"


def test_queue_is_bounded_and_all_or_nothing() -> None:
    engine = Engine(max_queue=2)  # not started: nothing drains it
    job = object()
    engine.submit([job])  # type: ignore[list-item]
    with pytest.raises(QueueFull):
        engine.submit([job, job])  # type: ignore[list-item]
    assert engine.jobs.qsize() == 1


def test_public_host_needs_a_key(runs) -> None:
    with pytest.raises(LmtuneError, match="api-key"):
        build_server([runs["a"]], host="0.0.0.0")


def test_cli_serves_and_sigterm_drains_in_flight_requests(runs, port) -> None:
    import os
    import signal
    import subprocess
    import sys

    from support import REPO

    number = port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lmtune.cli", "serve", str(runs["full"]), "--port", str(number)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{number}/v1", api_key="unused", max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        stream = client.completions.create(
            model=runs["full"].name, prompt="Once", max_tokens=200, temperature=0, stream=True
        )
        first = next(iter(stream))
        proc.send_signal(signal.SIGTERM)  # mid-request: the answer must still arrive whole
        rest = list(stream)
        assert first.choices and rest[-1].choices[0].finish_reason in ("stop", "length")
        # uvicorn re-raises the signal once it has drained, so the exit status says SIGTERM ended it.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ten_lora_runs_cost_one_base(make_run) -> None:
    from lmtune.serve.registry import load_registry

    runs = [make_run("sft", "lora", seed=10 + i, steps=1) for i in range(10)]
    registry = load_registry(runs, lambda text, warning=False: None)
    assert len(registry.backends) == 1
    (row,) = registry.memory()
    total = sum(p.numel() * p.element_size() for p in registry.backends[0].model.parameters())
    adapters = sum(row["adapter_bytes"].values())
    print(f"10 LoRA runs: base {row['base_bytes'] / 1e6:.3f} MB once + adapters {adapters / 1e6:.3f} MB "
          f"= {total / 1e6:.3f} MB (10 copies: {10 * (row['base_bytes'] + adapters / 10) / 1e6:.3f} MB)")  # fmt: skip
    assert len(row["adapter_bytes"]) == 10 and row["base_bytes"] + adapters == total
    assert total < 2 * row["base_bytes"]


def test_an_exported_model_directory_serves_like_its_run(tmp_path, runs, serving) -> None:
    from lmtune.ship import export_model

    exported = export_model(runs["a"], tmp_path / "merged-a").out
    with serving([exported]) as (_, url):
        client = openai.OpenAI(base_url=url, api_key="-", max_retries=0)
        got = client.chat.completions.create(model="merged-a", messages=QUESTION, max_tokens=12, temperature=0)
    want = lmtune.generate(runs["a"], messages=[lmtune_msg(m) for m in QUESTION], max_new_tokens=12)
    assert got.choices[0].message.content == want


def test_requests_for_two_adapters_share_batches_and_keep_their_answers(server, client, runs) -> None:
    prompts = [(runs[k].name, f"Tell me about {w}") for k in ("a", "b") for w in ("cats", "dogs", "suns", "trees")]

    def ask(item):
        model, prompt = item
        return client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0).choices[0].text

    before = server.engine.batches
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, prompts))
    batches = server.engine.batches - before
    alone = [ask(item) for item in prompts]
    print(f"{len(prompts)} requests over 2 adapters in {batches} batches")
    assert together == alone and batches < len(prompts)
    assert together[:4] != together[4:]


def test_a_run_name_with_dots_is_served(tmp_path, runs) -> None:
    import shutil

    from lmtune.serve.engine import Job, generate_batch
    from lmtune.serve.registry import load_registry

    dotted = tmp_path / "support.v2"
    shutil.copytree(runs["b"], dotted)
    registry = load_registry([runs["a"], dotted], lambda text, warning=False: None)
    served = registry.get("support.v2")
    assert served is not None and served.adapter == "support_v2" and len(registry.backends) == 1
    texts: list[str] = []
    job = Job(served, [1, 5, 6], 4, 0.0, 1.0, None, (), lambda kind, p: texts.append(p) if kind == "text" else None)
    generate_batch([job])
    assert job.finished and len(job.generated) <= 4
