"""`POST /v1/classify`: a classification run's labels and a token-classification run's word tags, as the run's
own model predicts them; generation endpoints refuse classifiers and /v1/classify refuses generators."""

from __future__ import annotations

import json
import urllib.request

import pytest
import torch

from lmtune.api import finetune
from lmtune.api.tagging import tag_sentences
from lmtune.export import load_tuned

SENTENCES = [("john lives in paris", "B-PER O O B-LOC"), ("mary works in rome", "B-PER O O B-LOC"),
             ("the cat sat", "O O O"), ("anna visited london", "B-PER O B-LOC")]  # fmt: skip


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    blocks = ["\n".join(f"{w} {t}" for w, t in zip(s.split(), tags.split(), strict=True)) for s, tags in SENTENCES]
    (root / "train.conll").write_text("\n\n".join(blocks * 6) + "\n", encoding="utf-8")
    cfg = {
        "task": "token_classification",
        "model": {"name": "preset:tiny-chat"},
        "output_dir": str(root / "run-ner"),
        "data": {"train": str(root / "train.conll"), "max_length": 32, "val_fraction": 0.2, "leakage": "off"},
        "method": {"name": "full"},
        "forgetting": {"measure": False},
        "train": {"max_steps": 3, "batch_size": 8, "lr": 3e-3, "mixed_precision": "no"},
    }
    return finetune(cfg).run_dir


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_classify_labels_and_tags_as_the_runs_predict(make_run, ner_run, serving) -> None:
    cls_run = make_run("classification", "lora")
    gen_run = make_run("sft", "full", seed=3)
    with serving([cls_run, ner_run, gen_run]) as (_, url):
        texts = ["the cat is good", "the dog is bad"]
        status, body = _post(url + "/classify", {"model": cls_run.name, "input": texts})
        assert status == 200, body
        model, tok, _ = load_tuned(cls_run)
        with torch.no_grad():
            probs = model(**tok(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
        for row, p in zip(body["data"], probs, strict=True):
            assert row["label"] == ["neg", "pos"][int(p.argmax())]
            assert abs(row["scores"]["pos"] - float(p[1])) < 1e-5

        status, body = _post(url + "/classify", {"model": ner_run.name, "input": "john lives in rome"})
        assert status == 200, body
        tagger, ner_tok, cfg = load_tuned(ner_run)
        (want,), _ = tag_sentences(tagger, ner_tok, [["john", "lives", "in", "rome"]], max_length=cfg.data.max_length)
        assert [w["label"] for w in body["data"][0]["words"]] == want

        status, body = _post(url + "/chat/completions", {"model": cls_run.name, "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert status == 400 and "classify" in body["error"]["message"]
        status, body = _post(url + "/classify", {"model": gen_run.name, "input": "hi"})
        assert status == 400 and body["error"]["param"] == "model"


def test_embeddings_through_the_openai_client(make_run, serving) -> None:
    import openai

    from lmtune.ship.export import merged

    cls_run, lora_run = make_run("classification", "lora"), make_run("sft", "lora", seed=1, lr=5e-2, steps=6)
    with serving([cls_run, lora_run]) as (_, url):
        client = openai.OpenAI(base_url=url, api_key="-", max_retries=0)
        texts = ["the cat is good", "a much longer sentence about the dog"]
        for run in (cls_run, lora_run):
            for fmt in ("float", "base64"):
                got = client.embeddings.create(model=run.name, input=texts, encoding_format=fmt)
                assert [d.index for d in got.data] == [0, 1] and got.usage.prompt_tokens > 0
                model, tok, _ = load_tuned(run)
                enc = tok(texts, return_tensors="pt", padding=True)
                with torch.no_grad():
                    hidden = merged(model)(**enc, output_hidden_states=True).hidden_states[-1]
                mask = enc["attention_mask"].unsqueeze(-1).float()
                want = (hidden * mask).sum(1) / mask.sum(1)
                vectors = [d.embedding for d in got.data]
                if fmt == "base64" and isinstance(vectors[0], str):
                    from lmtune.serve.embed import decode_base64

                    vectors = [decode_base64(v).tolist() for v in vectors]
                torch.testing.assert_close(torch.tensor(vectors), want, rtol=1e-4, atol=1e-4)
