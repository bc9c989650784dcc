"""Catastrophic forgetting: the general-text loss, its before/after report, the shipped reference texts, replay,
and (on the real stories260K) proof that LoRA, replay and L2-SP forget less than plain full fine-tuning."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support import REPO, write_jsonl

from lmtune.api import finetune
from lmtune.config import ModelConfig, ReplayConfig
from lmtune.data.formats import TextExample
from lmtune.data.prepare import GENERAL_SAMPLES, RESOURCES, general_text, paragraphs, replay_examples
from lmtune.data.types import IGNORE
from lmtune.errors import LmtuneError
from lmtune.evaluate.forgetting import forgetting, forgetting_advice, forgetting_report, general_loss, general_rows
from lmtune.model import load_model, load_tokenizer

STORIES260K = (REPO / "../shared/models/stories260K").resolve()
needs_stories260k = pytest.mark.skipif(
    not (STORIES260K / "config.json").is_file(), reason=f"the stories260K model is not at {STORIES260K}"
)


@pytest.fixture(scope="module")
def stories_text() -> str:
    return general_text("stories")[0]


def scored(rows) -> list[int]:
    """The token ids the rows score, in order (a row's first position is never predicted)."""
    return [label for r in rows for label in r.labels[1:] if label != IGNORE]


# --- the chunks: every token scored once, BOS as in training, capped ---------------------------------------------


def test_rows_without_bos_score_every_token_but_the_first_once(tokenizer, stories_text):
    ids = tokenizer(stories_text, add_special_tokens=False)["input_ids"]
    rows = general_rows(tokenizer, stories_text, max_length=64, max_tokens=None)
    assert scored(rows) == ids[1:]  # chunks overlap by one token, so each chunk's first token is scored before
    assert all(len(r.input_ids) <= 64 for r in rows) and len(rows) > 10


def test_overlapping_rows_give_context_and_still_score_each_token_once(tokenizer, stories_text):
    ids = tokenizer(stories_text, add_special_tokens=False)["input_ids"]
    rows = general_rows(tokenizer, stories_text, max_length=64, stride=16, max_tokens=None)
    assert scored(rows) == ids[1:]
    later = rows[1:-1]
    assert later and all(len(r.input_ids) == 64 for r in later)
    # After the first chunk, a row scores only its last 16 tokens: each has at least 48 tokens of context.
    assert all(sum(label != IGNORE for label in r.labels) == 16 for r in later)
    assert all(r.labels[:48] == [IGNORE] * 48 for r in later)


def test_max_tokens_caps_what_is_scored(tokenizer, stories_text):
    ids = tokenizer(stories_text, add_special_tokens=False)["input_ids"]
    rows = general_rows(tokenizer, stories_text, max_length=64, max_tokens=300)
    assert scored(rows) == ids[1:301]


def test_bad_chunk_settings_are_errors(tokenizer):
    with pytest.raises(LmtuneError, match="stride must be between 1 and 64"):
        general_rows(tokenizer, "some text here", max_length=64, stride=65)
    with pytest.raises(LmtuneError, match="too short"):
        general_rows(tokenizer, "a", max_length=64)


@needs_stories260k
def test_rows_start_with_bos_where_the_tokenizer_adds_one(stories_text):
    tok = load_tokenizer(ModelConfig(name=str(STORIES260K)))
    ids = tok(stories_text, add_special_tokens=False)["input_ids"]
    rows = general_rows(tok, stories_text, max_length=64, max_tokens=None)
    assert all(r.input_ids[0] == tok.bos_token_id for r in rows)
    assert scored(rows) == ids  # with a BOS to predict from, the first token of every chunk is scored too


# --- the loss ---------------------------------------------------------------------------------------------------


def reference_loss(model, tokenizer, text: str, window: int) -> float:
    """The loss written out independently: chunks overlapping by one token, plain cross-entropy per chunk."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, window - 1):
            chunk = torch.tensor([ids[start : start + window]])
            logits = model(chunk).logits[0, :-1]
            total += float(F.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
            n += chunk.shape[1] - 1
    return total / n


def test_general_loss_equals_cross_entropy_over_the_chunks(tiny_model, tokenizer, stories_text, tmp_path):
    text = stories_text[:3000]
    result = general_loss(tiny_model, tokenizer, text, max_length=64, batch_size=4)
    assert result["loss"] == pytest.approx(reference_loss(tiny_model, tokenizer, text, 64), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["tokens"] == len(tokenizer(text, add_special_tokens=False)["input_ids"]) - 1
    path = tmp_path / "general.txt"
    path.write_text(text, encoding="utf-8")
    assert general_loss(tiny_model, tokenizer, path, max_length=64)["loss"] == pytest.approx(result["loss"], rel=1e-6)
    for training in (True, False):  # the model is left in the mode it was found in
        tiny_model.train(training)
        general_loss(tiny_model, tokenizer, text[:500], max_length=64)
        assert tiny_model.training is training


def test_forgetting_reports_the_loss_ratio_and_warns_above_the_threshold(tiny_model, tokenizer, stories_text):
    text = stories_text[:2000]
    same = forgetting(tiny_model, tiny_model, tokenizer, text, max_length=64)
    assert same["ratio"] == pytest.approx(1.0) and same["ratio_of"] == "loss" and same["warning"] is False

    damaged = load_model(ModelConfig(name="preset:tiny-chat"))
    with torch.no_grad():
        for p in damaged.parameters():
            p.add_(torch.randn_like(p) * 0.2, alpha=1.0)
    report = forgetting(tiny_model, damaged, tokenizer, text, max_length=64, threshold=1.01)
    assert report["after"]["loss"] > report["before"]["loss"]
    assert report["ratio"] == pytest.approx(report["after"]["loss"] / report["before"]["loss"])
    assert report["perplexity_ratio"] == pytest.approx(report["after"]["perplexity"] / report["before"]["perplexity"])
    assert report["warning"] is (report["ratio"] > 1.01) is True
    lenient = forgetting_report(report["before"], report["after"], threshold=report["ratio"] + 0.01)
    assert lenient["warning"] is False

    advice = forgetting_advice(report, "full")
    assert f"x{report['ratio']:.3f}" in advice and "data.replay" in advice and "train.l2sp" in advice
    assert "use LoRA" in advice and "use LoRA" not in forgetting_advice(report, "lora")
    assert "threshold" not in forgetting_advice(lenient)


# --- the shipped reference texts --------------------------------------------------------------------------------


def test_the_shipped_samples_are_package_data_of_a_useful_size():
    for name, file in GENERAL_SAMPLES.items():
        text, path = general_text(name)
        assert path == RESOURCES / file and path.is_file()
        assert text.isascii() and "\ufffd" not in text
        assert len(paragraphs(text, str(path))) >= 20, name
    assert 15_000 <= len(general_text("general")[0].encode()) <= 30_000
    assert '"resources/*.txt"' in (REPO / "pyproject.toml").read_text(encoding="utf-8")  # shipped in the wheel


def test_general_text_reads_a_file_and_explains_bad_ones(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("First paragraph.\n\nSecond one.\n", encoding="utf-8")
    assert general_text(str(good)) == ("First paragraph.\n\nSecond one.\n", good)
    with pytest.raises(LmtuneError, match="no such file") as info:
        general_text(str(tmp_path / "missing.txt"))
    assert "general, stories" in info.value.hint
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(LmtuneError, match="empty"):
        general_text(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(LmtuneError, match="not UTF-8"):
        general_text(str(tmp_path / "latin1.txt"))


# --- replay -----------------------------------------------------------------------------------------------------


def test_paragraphs_keep_their_line_and_long_ones_are_cut_at_sentences():
    text = "Title line\nstill the title.\n\n\nSecond paragraph.\n\n" + "A short sentence here. " * 20
    parts = paragraphs(text, "g.txt", max_chars=100)
    assert parts[0] == TextExample("Title line still the title.", "g.txt", 1)
    assert parts[1] == TextExample("Second paragraph.", "g.txt", 5)
    rest = parts[2:]
    assert len(rest) == 5 and all(p.line == 7 and len(p.text) <= 100 for p in rest)
    assert " ".join(p.text for p in rest) == ("A short sentence here. " * 20).strip()


def test_replay_draws_the_configured_share_deterministically():
    picked, info = replay_examples(ReplayConfig(source="stories", fraction=0.2), n_train=40, seed=1)
    assert len(picked) == 10  # 10 / (40 + 10) = 20% of the mix
    assert len({p.text for p in picked}) == 10
    assert info["examples"] == 10 and info["paragraphs_available"] == 24 and info["source"] == "stories"
    assert replay_examples(ReplayConfig(source="stories", fraction=0.2), n_train=40, seed=1)[0] == picked
    assert replay_examples(ReplayConfig(source="stories", fraction=0.2), n_train=40, seed=2)[0] != picked
    many, _ = replay_examples(ReplayConfig(source="stories", fraction=0.5), n_train=60, seed=1)
    assert len(many) == 60 and len({p.text for p in many}) == 24  # all paragraphs, then again in a new order


def text_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = ["bolt", "nut", "gear", "lever", "spring", "valve", "pump", "seal", "shaft", "bearing"]
    return [{"text": "parts: " + ", ".join(rng.choice(words) for _ in range(12))} for _ in range(n)]


def small_run(train: Path, **sections) -> dict:
    cfg = {
        "name": "forget",
        "seed": 3,
        "data": {"train": str(train), "val_fraction": 0.2, "max_length": 64},
        "method": {"name": "full"},
        "train": {"max_steps": 4, "batch_size": 4, "lr": 3e-3, "warmup_steps": 0, "mixed_precision": "no"},
        "forgetting": {"max_length": 64, "max_tokens": 2000},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def test_a_run_mixes_replay_in_and_measures_forgetting(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", text_records(30, 0))
    cfg = small_run(train, data={"replay": {"source": "stories", "fraction": 0.25}})
    result = finetune(cfg, output_dir=str(tmp_path / "run"))
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    replay = data["splits"]["replay"]
    assert data["splits"]["train"]["examples"] == 24
    assert replay["examples"] == 8 and replay["fraction"] == 0.25  # 8 of 32 examples
    assert replay["tokens"]["kept"] == 8 and replay["tokens"]["trained_tokens"] > 0
    assert data["splits"]["train"]["rows"] == 32  # unpacked: one row per task or replay example

    f = result.summary["forgetting"]
    assert f["text"] == "general" and f["file"].endswith("general_en.txt")
    assert f["before"]["tokens"] == f["after"]["tokens"] == 2000
    assert f["ratio"] == pytest.approx(f["after"]["loss"] / f["before"]["loss"])
    assert f["before"]["loss"] != f["after"]["loss"] and f["warning"] is (f["ratio"] > 1.1)

    off = finetune(small_run(train, forgetting={"measure": False}), output_dir=str(tmp_path / "off")).summary
    assert (
        "forgetting" not in off and "replay" not in json.loads((tmp_path / "off" / "data.json").read_text())["splits"]
    )


# --- proof on real pretrained weights ---------------------------------------------------------------------------


def code_text(rng: random.Random) -> str:
    """A small program: a domain a model trained on children's stories has never seen."""
    v, a, b, c = rng.choice("abcxyznm"), rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 99)
    op = rng.choice("+-*")
    return f"{v}{a} = {b} {op} {c}\nif {v}{a} > {a}:\n    print({v}{a})\nelse:\n    {v}{a} = {v}{a} {op} 1\n"


@pytest.mark.slow
@needs_stories260k
def test_lora_replay_and_l2sp_forget_less_than_full_fine_tuning_on_stories260k(tmp_path):
    """stories260K (trained on TinyStories) fine-tuned on code; forgetting is its loss on held-out stories.

    The shipped stories sample is split in two: replay trains on one half, the forgetting measurement scores the
    other, so replay is never credited for having seen the measured text.
    """
    rng = random.Random(0)
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": code_text(rng)} for _ in range(240)])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": code_text(rng)} for _ in range(32)])
    stories = general_text("stories")[0].split("\n\n")
    (tmp_path / "replay.txt").write_text("\n\n".join(stories[:12]), encoding="utf-8")
    (tmp_path / "measure.txt").write_text("\n\n".join(stories[12:]), encoding="utf-8")

    def run(name: str, method: dict, **sections: dict) -> dict:
        cfg = {
            "name": name,
            "seed": 0,
            "model": {"name": str(STORIES260K)},
            "data": {"train": str(train), "validation": str(val), "format": "text", "max_length": 128},
            "method": method,
            "train": {"max_steps": 45, "batch_size": 16, "lr": 3e-3, "warmup_steps": 0, "mixed_precision": "no"},
            "forgetting": {"text": str(tmp_path / "measure.txt")},
        }
        for key, value in sections.items():
            cfg[key] = {**cfg[key], **value}
        summary = finetune(cfg, output_dir=str(tmp_path / name)).summary
        f = summary["forgetting"]
        print(
            f"{name:10s} task loss {summary['val_loss_before']:.3f} -> {summary['val_loss_after']:.3f}   "
            f"stories loss {f['before']['loss']:.4f} -> {f['after']['loss']:.4f}   ratio x{f['ratio']:.3f}"
        )
        assert summary["val_loss_after"] < 0.3 * summary["val_loss_before"], "it must learn the new domain"
        return f

    full = run("full", {"name": "full"})
    lora = run("lora", {"name": "lora", "r": 8, "alpha": 16})
    replay = run("replay", {"name": "full"}, data={"replay": {"source": str(tmp_path / "replay.txt"), "fraction": 0.2}})
    l2sp = run("l2sp", {"name": "full"}, train={"l2sp": 0.1})

    assert full["before"]["loss"] == lora["before"]["loss"] == replay["before"]["loss"]  # the same base model
    assert full["ratio"] > 1.5 and full["warning"]  # code drowns the stories
    assert lora["ratio"] < full["ratio"]
    assert replay["ratio"] < full["ratio"]
    assert l2sp["ratio"] < full["ratio"]


def test_a_base_at_chance_level_has_nothing_to_forget() -> None:
    from lmtune.evaluate.forgetting import forgetting_advice, forgetting_report

    chance = {"loss": math.log(1024) * 0.99, "perplexity": 1000.0, "tokens": 10}
    worse = {"loss": 8.5, "perplexity": 5000.0, "tokens": 10}
    report = forgetting_report(chance, worse, 1.1, vocab_size=1024)
    assert report["ratio"] > 1.1 and report["untrained_base"] and not report["warning"]
    assert "nothing to forget" in forgetting_advice(report)
    trained = {"loss": 3.0, "perplexity": 20.0, "tokens": 10}
    assert forgetting_report(trained, worse, 1.1, vocab_size=1024)["warning"]
