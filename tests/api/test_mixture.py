"""A run on a mixture of sources (data.train as a list): per-source counts, tokens and validation losses in the run
directory and its report, and a resume that equals the uninterrupted run."""

from __future__ import annotations

import json

import pytest
from support import chat_record, crash_at, make_config, read_metrics, train_losses, write_jsonl

from lmtune.api import finetune


@pytest.fixture
def mixture(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(30)])
    sums = write_jsonl(tmp_path / "sums.jsonl", [{"q": f"{i} + 1 =", "a": f" {i + 1}"} for i in range(20)])
    return [
        {"path": str(chat), "weight": 2},
        {"path": str(sums), "weight": 1, "columns": {"prompt": "q", "completion": "a"}, "template": "raw"},
    ]


def test_a_mixture_run_reports_each_source_and_resumes_exactly(tmp_path, mixture):
    cfg = make_config(tmp_path / "unused.jsonl", data={"train": mixture, "val_fraction": 0.2})
    straight = tmp_path / "straight"
    finetune(cfg, output_dir=str(straight))

    data = json.loads((straight / "data.json").read_text())
    train = data["splits"]["train"]["sources"]
    assert (train["chat"]["available"], train["sums"]["available"]) == (24, 16)
    assert (train["chat"]["examples"], train["sums"]["examples"]) == (27, 13)  # 2:1 of 40
    assert train["chat"]["tokens"]["kept"] == 27 and train["sums"]["tokens"]["trained_tokens"] > 0
    assert set(data["splits"]["validation"]["sources"]) == {"chat", "sums"}
    validation = [r for r in read_metrics(straight) if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [0, 4]
    for r in validation:
        assert r["loss/chat"] > 0 and r["loss/sums"] > 0 and r["loss/chat"] != r["loss/sums"]
    page = (straight / "report.html").read_text()
    assert "Validation loss per source" in page and "train · sums" in page

    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, output_dir=str(crashed), after_step=[crash_at(3)])
    finetune(cfg, output_dir=str(crashed), resume=True)
    a, b = train_losses(straight), train_losses(crashed)
    assert sorted(b) == [1, 2, 3, 4] and all(b[s] == pytest.approx(a[s], rel=1e-6) for s in a)


def test_the_overall_validation_loss_is_the_token_weighted_mean_of_the_sources(tmp_path, mixture):
    """One pass over each source's validation rows gives both figures: the overall one equals a pass over all."""
    from lmtune.api.hooks import validate
    from lmtune.api.setup import build_model, prepare_data, silent, task_of
    from lmtune.api.steps import Session
    from lmtune.config import load_config
    from lmtune.model import load_tokenizer
    from lmtune.train.launch import make_accelerator
    from lmtune.train.validation import evaluate_loss

    cfg = load_config(make_config(tmp_path / "unused.jsonl", data={"train": mixture, "val_fraction": 0.2}))
    tokenizer = load_tokenizer(cfg.model)
    prepared = prepare_data(cfg, tokenizer)
    built = build_model(cfg, prepared, tokenizer.pad_token_id)
    acc = make_accelerator("no")
    session = Session(cfg, task_of(cfg), acc, silent, False, tokenizer, prepared, built, model=built.model)
    result = validate(session)
    whole = evaluate_loss(built.model, prepared.val_rows, 4, tokenizer.pad_token_id, acc, built.objective)
    assert result["tokens"] == whole["tokens"] > 0
    assert result["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    assert (
        min(result["loss/chat"], result["loss/sums"]) < result["loss"] < max(result["loss/chat"], result["loss/sums"])
    )
