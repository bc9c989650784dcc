"""Every training type x every method it supports on a CPU, on tiny models, where the per-task tests do not
already cover the pair (sft: tests/test_methods.py; token_classification: tests/test_token_classification.py;
reward/dpo/rlhf with LoRA and DPO with full: tests/align/). Each run trains a few steps and must move its task's
validation figure the right way; the trainable-parameter count it reports must be the one of the model it
trained; and the saved run must load back to that model (the same outputs as the base with the method applied
and the trained weights of the last checkpoint put back)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from support import write_jsonl

from lmtune.api import finetune
from lmtune.config import ModelConfig, load_config
from lmtune.export import load_tuned
from lmtune.methods import METHODS, apply_method
from lmtune.model import count_parameters, load_model, load_tokenizer
from lmtune.tasks import TASKS

PRESET = "preset:tiny-chat"
METHOD = {
    "full": {"name": "full"},
    "freeze": {"name": "freeze", "train_last_layers": 1},
    "lora": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "dora": {"name": "dora", "r": 4, "alpha": 8, "dropout": 0.0},
    "ia3": {"name": "ia3"},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 4},
    "prefix_tuning": {"name": "prefix_tuning", "num_virtual_tokens": 4},
    "adapters": {"name": "adapters", "bottleneck": 8},
}
# Methods that train few weights take a larger step to move the loss in a few steps.
LR = {"ia3": 5e-2, "prompt_tuning": 5e-2, "prefix_tuning": 3e-2, "lora": 1e-2, "dora": 1e-2, "adapters": 1e-2}
WORDS = ["cat", "dog", "sun", "tree", "boat", "bird", "fish", "star", "cake", "ship", "moon", "frog"]

OWN_LOOP = [
    *[("causal_lm", m) for m in ("freeze", "lora", "dora", "ia3", "prompt_tuning", "prefix_tuning", "adapters")],
    *[("seq2seq", m) for m in ("full", "freeze", "lora", "dora")],
    *[("classification", m) for m in ("freeze", "dora")],
]
TRL = [("reward", m) for m in ("full", "freeze", "dora")] + [("dpo", m) for m in ("freeze", "dora")]
RLHF = ["full", "freeze", "dora"]


def test_the_matrix_covers_every_supported_pair() -> None:
    """Each (task, method) a CPU can run is tested here or in the file this module's docstring names for it."""
    elsewhere = {("sft", m) for m in METHODS if m != "qlora"}
    elsewhere |= {("token_classification", m) for m in ("full", "freeze", "lora", "dora")}
    elsewhere |= {("causal_lm", "full"), ("classification", "full"), ("classification", "lora")}
    elsewhere |= {("reward", "lora"), ("dpo", "lora"), ("dpo", "full"), ("rlhf", "lora")}
    here = set(OWN_LOOP) | set(TRL) | {("rlhf", m) for m in RLHF}
    supported = {(t, m) for t, task in TASKS.items() for m in task.methods if m != "qlora"}
    assert here | elsewhere == supported


def _rows(task: str, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(n):
        a, b = rng.sample(WORDS, 2)
        if task == "causal_lm":
            rows.append({"text": f"The {a} sat by the {b}. The {b} was kind to the {a}, and they were friends."})
        elif task == "seq2seq":
            rows.append({"prompt": f"Say the second word: {a} {b}", "completion": b})
        elif task == "classification":
            good = rng.random() < 0.5
            rows.append({"text": f"the {a} is {'good' if good else 'bad'}", "label": "pos" if good else "neg"})
        elif task in ("reward", "dpo"):
            rows.append(
                {"prompt": f"Tell me about the {a}.", "chosen": f" The {a} is good.", "rejected": f" The {a} is bad."}
            )
        else:  # rlhf: prompts
            rows.append({"prompt": f"Tell me about the {a}."})
    return rows


def _config(tmp_path: Path, task: str, method: str, model: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"max_length": 64}
    if method in ("prompt_tuning", "prefix_tuning"):
        data["packing"] = False  # causal_lm packs by default; virtual tokens refuse packing
    train = write_jsonl(tmp_path / f"{task}-train.jsonl", _rows(task, 32, 0))
    val = write_jsonl(tmp_path / f"{task}-val.jsonl", _rows(task, 8, 1))
    return {
        "task": task,
        "model": {"name": model},
        "output_dir": str(tmp_path / f"run-{task}-{method}"),
        "method": METHOD[method],
        "data": {"train": str(train), "validation": str(val), **data},
        "forgetting": {"measure": False},
        "train": {"lr": LR.get(method, 3e-3), "batch_size": 8, "max_steps": 6, "mixed_precision": "no", **extra},
    }


def _probe(model: Any, task: str, tok: Any) -> torch.Tensor:
    ids = torch.tensor([tok("the cat is good")["input_ids"]])
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task == "seq2seq":
        kwargs["decoder_input_ids"] = torch.tensor([[0, 5, 6]])
    with torch.no_grad():
        return model.eval()(**kwargs, use_cache=False).logits


@pytest.mark.parametrize(("task", "method"), OWN_LOOP, ids=[f"{t}-{m}" for t, m in OWN_LOOP])
def test_own_loop_task_trains_counts_and_reloads(tmp_path: Path, t5_dir: Path, task: str, method: str) -> None:
    model_name = str(t5_dir) if task == "seq2seq" else PRESET
    cfg = _config(tmp_path, task, method, model_name)
    run = tmp_path / f"run-{task}-{method}"
    summary = finetune(cfg).summary
    assert summary["val_loss_after"] < summary["val_loss_before"], summary

    # The reported count is the trained model's, rebuilt here from the base and the method.
    tok = load_tokenizer(ModelConfig(name=model_name))
    labels = summary.get("labels", [])
    base = load_model(ModelConfig(name=model_name), TASKS[task].model, labels=labels, pad_token_id=tok.pad_token_id)
    trained = apply_method(base, load_config(cfg).method)
    assert summary["trainable_parameters"] == count_parameters(trained)[0]

    # save -> load gives the trained model.
    weights = load_file(str(run / "checkpoints" / "step-000006" / "trainable.safetensors"))
    params = dict(trained.named_parameters())
    assert set(weights) == {n for n, p in params.items() if p.requires_grad}
    with torch.no_grad():
        for name, w in weights.items():
            params[name].copy_(w)
    loaded, loaded_tok, _ = load_tuned(run)
    torch.testing.assert_close(_probe(loaded, task, loaded_tok), _probe(trained, task, tok), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("task", "method"), TRL, ids=[f"{t}-{m}" for t, m in TRL])
def test_preference_task_learns_and_reloads(tmp_path: Path, task: str, method: str) -> None:
    cfg = _config(tmp_path, task, method, PRESET)
    s = finetune(cfg).summary
    assert s["val_loss_after"] < s["val_loss_before"], s
    loaded, tok, saved = load_tuned(tmp_path / f"run-{task}-{method}")
    assert saved.task == task and saved.method.name == method
    logits = _probe(loaded, task, tok)
    assert logits.shape[-1] == (1 if task == "reward" else len(tok)) and torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("matrix-reward")
    cfg = _config(root, "reward", "lora", PRESET, max_steps=12)
    assert finetune(cfg).summary["val_accuracy_after"] >= 0.75
    return root / "run-reward-lora"


@pytest.mark.parametrize("method", RLHF)
def test_rlhf_runs_every_method_against_a_reward_model(tmp_path: Path, reward_run: Path, method: str) -> None:
    cfg = _config(tmp_path, "rlhf", method, PRESET, max_steps=2)
    cfg["rlhf"] = {"reward_model": str(reward_run), "max_new_tokens": 4}
    s = finetune(cfg).summary
    assert s["val_reward_before"] is not None and s["val_reward_after"] is not None and s["kl_last"] is not None
    loaded, tok, saved = load_tuned(tmp_path / f"run-rlhf-{method}")
    assert saved.task == "rlhf" and torch.isfinite(_probe(loaded, "rlhf", tok)).all()
