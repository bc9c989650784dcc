"""task classification: a tiny BERT (built from a config, WordPiece tokenizer trained here) and the preset Llama
with a classification head, on text/label data."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from sklearn.metrics import accuracy_score
from support import run_cli, save_tiny_bert, write_jsonl
from transformers import BertForSequenceClassification, BertTokenizerFast

from lmtune.api import finetune
from lmtune.api.evaluate import evaluate_run
from lmtune.config import load_config
from lmtune.data.batching import collate, unpacked
from lmtune.data.formats import LabelExample, normalize
from lmtune.data.load import load_records
from lmtune.data.prepare import load_splits
from lmtune.data.tokenize import label_names, tokenize_classification
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError
from lmtune.export import load_tuned
from lmtune.tasks import TASKS
from lmtune.train.objectives import classification_loss, resolve_class_weights
from lmtune.train.validation import evaluate_loss

GOOD = ["good", "great", "lovely", "superb", "wonderful", "fine"]
BAD = ["bad", "awful", "terrible", "dull", "boring", "poor"]
FILLER = ["the", "film", "was", "really", "quite", "plot", "acting", "and", "story", "very"]


def _sentence(rng: random.Random, positive: bool) -> str:
    words = rng.sample(FILLER, 2) + rng.sample(GOOD if positive else BAD, 3)
    rng.shuffle(words)
    return " ".join(words)


def _write_tsv(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for i in range(n):
        rows.append(f"{_sentence(rng, i % 2 == 0)}\t{int(i % 2 == 0)}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece tokenizer over the words of these tests (built offline)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), [*GOOD, *BAD, *FILLER], BertForSequenceClassification)


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sentiment")
    return _write_tsv(root / "train.tsv", 160, 1), _write_tsv(root / "test.tsv", 20, 2)


def _config(model: str, train: Path, method: Any, **train_opts: Any) -> dict[str, Any]:
    return {
        "task": "classification",
        "seed": 5,
        "model": {"name": model},
        "data": {"train": str(train), "columns": {"text": "sentence"}, "max_length": 32, "val_fraction": 0.2},
        "method": method,
        "train": {
            "epochs": 6,
            "batch_size": 8,
            "lr": 2e-3,
            "warmup_steps": 0,
            "mixed_precision": "no",
            **train_opts,
        },
    }


def test_labels_are_read_sorted_and_unknown_ones_are_refused(bert_dir: Path) -> None:
    records = [
        Record({"text": "a", "label": 10}, "t.jsonl", 1),
        Record({"text": "b", "label": "2"}, "t.jsonl", 2),
        Record({"text": "c", "label": 2}, "t.jsonl", 3),
    ]
    examples = normalize(records, format="classification")
    assert [ex.label for ex in examples] == ["10", "2", "2"]
    assert label_names(examples) == ["2", "10"]  # numerically, and 2 and "2" are one class
    assert label_names([LabelExample("x", name, "t", 1) for name in ("pos", "neg", "neu")]) == ["neg", "neu", "pos"]
    with pytest.raises(LmtuneError, match=r"t.jsonl:1: field 'label': must be a string or an integer"):
        normalize([Record({"text": "a", "label": 1.5}, "t.jsonl", 1)], format="classification")

    tokenizer = BertTokenizerFast.from_pretrained(bert_dir)
    (tok,), stats = tokenize_classification(examples[:1], tokenizer, ["2", "10"], max_length=8)
    assert tok.class_label == 1 and tok.input_ids[0] == tokenizer.cls_token_id and stats.trained_tokens == 1
    with pytest.raises(DataError, match=r"v.tsv:7: field 'label': unknown label 'maybe'"):
        tokenize_classification([LabelExample("x", "maybe", "v.tsv", 7)], tokenizer, ["neg", "pos"], max_length=8)


def test_classification_loss_weights_and_smoothing() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 2])
    total, n = classification_loss(logits, labels)
    assert n == 6 and float(total) / n == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    smooth, _ = classification_loss(logits, labels, label_smoothing=0.1)
    assert float(smooth) / n == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.1)), rel=1e-6)
    weights = resolve_class_weights("balanced", labels.tolist(), 3)
    assert weights == pytest.approx([6 / (3 * 1), 6 / (3 * 2), 6 / (3 * 3)])
    weighted, _ = classification_loss(logits, labels, class_weights=weights)
    per_example = F.cross_entropy(logits, labels, reduction="none") * torch.tensor(weights)[labels]
    assert float(weighted) == pytest.approx(float(per_example.sum()), rel=1e-6)
    with pytest.raises(LmtuneError, match="2 weights for 3 labels"):
        resolve_class_weights([1.0, 2.0], [0, 1, 2], 3)


@pytest.mark.parametrize(
    ("model", "method"),
    [
        ("bert", "full"),
        ("bert", {"name": "lora", "r": 4, "alpha": 8}),
        ("preset:tiny-chat", "full"),
        ("preset:tiny-chat", {"name": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    ],
)
def test_classification_run_learns_reloads_and_evaluates(
    tmp_path: Path, bert_dir: Path, sentiment: tuple[Path, Path], model: str, method: Any
) -> None:
    train, test = sentiment
    name = str(bert_dir) if model == "bert" else model
    result = finetune(_config(name, train, method, class_weights="balanced"), output_dir=str(tmp_path / "run"))
    s = result.summary
    assert s["val_loss_after"] < s["val_loss_before"]
    assert s["val_accuracy_after"] >= 0.75 and s["val_accuracy_final"] == s["val_accuracy_after"]
    assert s["labels"] == ["0", "1"] and "classification" in s["forgetting_skipped"]
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("accuracy" in r and "f1" in r for r in records if r["split"] == "validation")

    # The reloaded model scores the validation split exactly as the model did after its last step.
    tuned, tokenizer, cfg = load_tuned(result.run_dir)
    assert type(tuned).__name__.startswith("Peft") == (method != "full")
    assert tuned.config.id2label == {0: "0", 1: "1"}
    val = unpacked(
        tokenize_classification(load_splits(cfg.data, cfg.seed).validation, tokenizer, ["0", "1"], max_length=32)[0]
    )
    again = evaluate_loss(
        tuned,
        val,
        8,
        tokenizer.pad_token_id,
        Accelerator(mixed_precision="no", cpu=True),
        TASKS["classification"].objective,
        TASKS["classification"].scorer(tuned.config.id2label),
    )
    assert again["accuracy"] == pytest.approx(s["val_accuracy_after"])
    # Same logits from a second load (the saved head is the trained one, not a fresh random one).
    batch = collate(val[:4], tokenizer.pad_token_id)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        first = tuned(**inputs).logits
        second = load_tuned(result.run_dir)[0](**inputs).logits
    assert torch.equal(first, second)

    # eval on a TSV: argmax predictions scored with the label names; equal to sklearn on the same predictions.
    ev = evaluate_run(result.run_dir, data=str(test), metrics=["accuracy", "f1"])
    examples = normalize(
        load_records(str(test)),
        format="classification",
        columns={"text": "sentence"},
    )
    enc = tokenizer([ex.text for ex in examples], padding=True, return_tensors="pt")
    enc.pop("token_type_ids", None)
    with torch.no_grad():
        predicted = [tuned.config.id2label[int(i)] for i in tuned(**enc).logits.argmax(-1)]
    gold = [ex.label for ex in examples]
    assert ev.metrics["tuned"]["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert ev.data["examples"] == 20 and "f1" in ev.metrics["tuned"]
    with pytest.raises(LmtuneError, match="baselines"):
        evaluate_run(result.run_dir, data=str(test), baselines=["zero-shot"])


def test_unknown_validation_label_other_methods_and_settings_are_refused(
    tmp_path: Path, bert_dir: Path, sentiment: tuple[Path, Path]
) -> None:
    train, _ = sentiment
    val = write_jsonl(tmp_path / "val.jsonl", [{"sentence": "good film", "label": 1}, {"sentence": "x", "label": 7}])
    cfg = _config(str(bert_dir), train, "full")
    cfg["data"]["validation"] = str(val)
    with pytest.raises(DataError, match=r"val.jsonl:2: field 'label': unknown label '7'"):
        finetune(cfg, output_dir=str(tmp_path / "bad-val"))
    with pytest.raises(LmtuneError, match="method ia3 does not support task 'classification'"):
        finetune(_config(str(bert_dir), train, "ia3"), output_dir=str(tmp_path / "ia3"))
    with pytest.raises(LmtuneError, match="packing"):
        load_config({**cfg, "data": {**cfg["data"], "packing": True}})
    with pytest.raises(LmtuneError, match="class_weights: applies to task classification only"):
        load_config({"data": {"train": str(train)}, "train": {"class_weights": "balanced"}})


def test_cli_eval_on_a_tsv(tmp_path: Path, bert_dir: Path, sentiment: tuple[Path, Path]) -> None:
    train, test = sentiment
    run = finetune(_config(str(bert_dir), train, "full", epochs=1), output_dir=str(tmp_path / "run")).run_dir
    done = run_cli("eval", run, "--data", test, "--metrics", "accuracy,f1", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert 0.0 <= out["metrics"]["tuned"]["accuracy"] <= 1.0 and out["data"]["examples"] == 20
