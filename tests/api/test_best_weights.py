"""Best weights by default: with validation data, final/ holds the weights of the best evaluation by the task's
own metric (a classifier's accuracy, ties to the lower loss), the last weights are kept beside in last/, and
summary.json says which step won and why."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from accelerate import Accelerator
from support import save_tiny_bert
from transformers import BertForSequenceClassification

from lmtune.api import finetune
from lmtune.data.batching import unpacked
from lmtune.data.prepare import load_splits
from lmtune.data.tokenize import tokenize_classification
from lmtune.export import load_tuned
from lmtune.tasks import TASKS
from lmtune.train.validation import evaluate_loss

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "plot", "very"]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Sentiment with a third of the labels flipped, and a high learning rate: validation accuracy goes up, then
    wanders as the model memorises the noise, so the best evaluation is not the last."""
    root = tmp_path_factory.mktemp("best")
    rng = random.Random(3)
    rows = ["sentence\tlabel"]
    for i in range(96):
        positive = i % 2 == 0
        words = rng.sample(WORDS[6:], 2) + rng.sample(WORDS[:3] if positive else WORDS[3:6], 2)
        rng.shuffle(words)
        rows.append(f"{' '.join(words)}\t{int(positive) if rng.random() > 0.33 else int(not positive)}")
    (root / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "train.tsv", save_tiny_bert(root / "bert", WORDS, BertForSequenceClassification)


def scored(run: Path, weights: str) -> dict[str, float]:
    model, tokenizer, cfg = load_tuned(run)
    if weights != "final":
        model = BertForSequenceClassification.from_pretrained(run / weights).eval()
    val = load_splits(cfg.data, cfg.seed).validation
    rows = unpacked(tokenize_classification(val, tokenizer, ["0", "1"], max_length=16)[0])
    task = TASKS["classification"]
    acc = Accelerator(mixed_precision="no", cpu=True)
    return evaluate_loss(
        model, rows, 8, tokenizer.pad_token_id, acc, task.objective, task.scorer(model.config.id2label)
    )


def test_final_holds_the_best_evaluation_by_accuracy_and_last_is_kept_beside(tmp_path: Path, noisy) -> None:
    train, bert = noisy
    config = {
        "task": "classification", "seed": 1, "model": {"name": str(bert)},
        "data": {"train": str(train), "columns": {"text": "sentence"}, "max_length": 16, "val_fraction": 0.25},
        "method": "full",
        "train": {"epochs": 8, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0, "mixed_precision": "no",
                  "eval_every": 3, "scheduler": "constant"},
    }  # fmt: skip
    run = tmp_path / "run"
    summary = finetune(config, output_dir=str(run)).summary
    lines = (run / "metrics.jsonl").read_text().splitlines()
    val = [r for r in map(json.loads, lines) if r["split"] == "validation" and r["step"] > 0]
    best = max(val, key=lambda r: (r["accuracy"], -r["loss"]))  # ties go to the lower loss
    chosen = summary["final_weights"]
    assert chosen["metric"] == "accuracy" and chosen["mode"] == "max"
    assert summary["final_step"] == chosen["step"] == best["step"] and chosen["value"] == best["accuracy"]
    assert best["step"] != summary["steps"], "the data must make the last evaluation worse than the best"
    assert "highest validation accuracy" in chosen["why"] and chosen["last_weights"] == "last"
    assert summary["val_accuracy_final"] == best["accuracy"]

    # final/ scores as the best evaluation did; last/ as the last one did.
    assert scored(run, "final")["accuracy"] == pytest.approx(best["accuracy"])
    assert scored(run, "final")["loss"] == pytest.approx(best["loss"], rel=1e-4)
    assert scored(run, "last")["loss"] == pytest.approx(val[-1]["loss"], rel=1e-4)

    # train.keep: last keeps the last weights as final/ and writes no last/.
    config["train"] = {**config["train"], "keep": "last", "max_steps": best["step"] + 6}
    again = finetune(config, output_dir=str(tmp_path / "last")).summary
    assert again["final_step"] == again["steps"] == best["step"] + 6 and not (tmp_path / "last" / "last").exists()
    assert again["final_weights"]["why"] == "train.keep: last"
    at_end = next(r for r in val if r["step"] == again["steps"])
    assert scored(tmp_path / "last", "final")["loss"] == pytest.approx(at_end["loss"], rel=1e-4)


def test_rouge_l_of_generated_answers_picks_the_best_weights_of_an_sft_run(tmp_path: Path) -> None:
    """train.best_metric: rougeL generates answers for the first train.eval_generate validation examples at each
    evaluation and scores them against their references; final/ is the evaluation with the highest ROUGE-L."""
    from support import chat_record, write_jsonl

    from lmtune.errors import LmtuneError

    data = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(24)])
    cfg = {
        "model": {"name": "preset:tiny-chat"},
        "data": {"train": str(data), "val_fraction": 0.25, "max_length": 64},
        "method": "full",
        "eval": {"max_new_tokens": 6},
        "train": {"max_steps": 4, "eval_every": 2, "batch_size": 4, "lr": 3e-3, "mixed_precision": "no",
                  "best_metric": "rougeL", "eval_generate": 3},
    }  # fmt: skip
    result = finetune(cfg, output_dir=str(tmp_path / "run"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scores = {r["step"]: r["rougeL"] for r in rows if r.get("split") == "validation"}
    assert sorted(scores) == [0, 2, 4] and all(0.0 <= v <= 100.0 for v in scores.values())  # percent, as eval
    weights = result.summary["final_weights"]
    assert weights["metric"] == "rougeL" and weights["mode"] == "max"
    assert scores[weights["step"]] == max(scores[2], scores[4]) > scores[0]  # it learns the answers' form
    # raw text has no answers to generate: said before training, not after it
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": f"story number {i} goes on"} for i in range(12)])
    with pytest.raises(LmtuneError, match="rougeL scores generated answers"):
        finetune({**cfg, "task": "causal_lm", "data": {"train": str(text), "val_fraction": 0.25}},
                 output_dir=str(tmp_path / "text"))  # fmt: skip
