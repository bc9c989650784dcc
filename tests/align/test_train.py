"""Tasks reward and dpo on the tiny preset, trained by lmtune's loop: they learn a learnable preference, save a
loadable model, resume exactly, stop early on their own metric, and run from the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from support import crash_at, run_main, write_jsonl

from lmtune.api import finetune
from lmtune.errors import LmtuneError
from lmtune.export import load_tuned
from lmtune.model import load_model

THINGS = ["cat", "dog", "sun", "tree", "boat", "bird", "fish", "star", "cake", "ship", "moon", "frog"]


def preference_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Chosen answers call the thing good, rejected ones bad; things and word order vary so nothing else tells."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample(THINGS, 2)
        rows.append(
            {
                "prompt": f"Tell me about the {a}.",
                "chosen": f" The {b} and {a} are good.",
                "rejected": f" The {a} and {b} are bad.",
            }
        )
    return rows


def config(tmp_path: Path, task: str, method: Any = "lora", **train: Any) -> dict[str, Any]:
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(40))
    val = write_jsonl(tmp_path / "val.jsonl", preference_rows(8, seed=1))
    return {
        "task": task,
        "output_dir": str(tmp_path / f"run-{task}"),
        "method": method,
        "data": {"train": str(data), "validation": str(val)},
        "forgetting": {"measure": False},
        "train": {"lr": 5e-3, "epochs": 2, "batch_size": 8, "mixed_precision": "no", **train},
    }


def test_reward_model_learns_pairwise_accuracy(tmp_path: Path) -> None:
    result = finetune(config(tmp_path, "reward", epochs=3))
    s = result.summary
    assert s["val_accuracy_after"] >= 0.9
    assert s["val_loss_after"] < s["val_loss_before"] - 0.3
    assert s["val_margin_after"] > s["val_margin_before"] + 1.0
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "validation"} and all("accuracy" in r for r in rows)
    model, _, cfg = load_tuned(result.run_dir)  # a classifier with one output: the score
    assert cfg.task == "reward" and model.config.num_labels == 1
    assert (result.run_dir / "report.html").is_file()


def _dpo_val_loss(run_dir: Path, pairs: list[dict[str, str]], beta: float) -> float:
    """DPO's loss recomputed from the saved model and its untouched base: equals trl's at the end of training
    only if final/ holds the trained weights."""
    policy, tok, cfg = load_tuned(run_dir)
    ref = load_model(cfg.model)

    def logp(model: Any, prompt: str, answer: str) -> torch.Tensor:
        p_ids = tok(prompt)["input_ids"]
        ids = tok(prompt + answer + tok.eos_token)["input_ids"]
        n = next((i for i, (a, b) in enumerate(zip(p_ids, ids, strict=False)) if a != b), len(p_ids))
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(input_ids=x).logits[0, :-1]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, x[0, 1:, None])[:, 0]
        return lp[n - 1 :].sum()

    losses = []
    for r in pairs:
        diff = (logp(policy, r["prompt"], r["chosen"]) - logp(ref, r["prompt"], r["chosen"])) - (
            logp(policy, r["prompt"], r["rejected"]) - logp(ref, r["prompt"], r["rejected"])
        )
        losses.append(-F.logsigmoid(beta * diff))
    return float(torch.stack(losses).mean())


@pytest.mark.parametrize("method", ["lora", "full"])
def test_dpo_moves_preferences_and_saves_the_trained_model(tmp_path: Path, method: str) -> None:
    cfg = config(tmp_path, "dpo", method, lr=5e-3 if method == "lora" else 1e-3)
    s = finetune(cfg).summary
    assert s["val_loss_before"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference: log 2
    assert s["val_margin_before"] == pytest.approx(0.0, abs=1e-6)
    assert s["val_loss_after"] < 0.6
    assert s["val_accuracy_after"] >= 0.75 and s["val_margin_after"] > 0.1
    assert s["reference"] == (
        "adapter disabled (implicit)" if method == "lora" else "the base before training (precomputed)"
    )
    # save -> load: the loaded model and base give back trl's last validation loss.
    val = [json.loads(line) for line in Path(cfg["data"]["validation"]).read_text().splitlines()]
    assert _dpo_val_loss(Path(cfg["output_dir"]), val, beta=0.1) == pytest.approx(s["val_loss_after"], abs=2e-3)


def test_cli_trains_dpo_refuses_to_clobber_and_generates(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    import yaml

    cfg = config(tmp_path, "dpo", epochs=1)
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_main(monkeypatch, capsys, "train", path)
    assert code == 0, err
    assert "preference accuracy" in err and "held-out loss before training: 0.6931" in out
    code, _, err = run_main(monkeypatch, capsys, "train", path)
    assert code == 2 and "already exists" in err
    code, out, err = run_main(
        monkeypatch, capsys, "generate", cfg["output_dir"], "--prompt", "Tell me", "--max-new-tokens", "4"
    )
    assert code == 0, err


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(LmtuneError, match=r"rlhf\.reward_model"):
        finetune({**config(tmp_path, "rlhf"), "rlhf": {}})
    with pytest.raises(LmtuneError, match=r"data\.packing"):
        finetune({**config(tmp_path, "dpo"), "data": {"train": "x.jsonl", "packing": True}})
    with pytest.raises(LmtuneError, match="does not support task 'reward'"):
        finetune(config(tmp_path, "reward", "prompt_tuning"))


def _train_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], round(r["loss"], 5)) for r in rows if r["split"] == "train"]


@pytest.mark.parametrize(("task", "method"), [("dpo", "lora"), ("dpo", "full"), ("reward", "lora")])
def test_interrupted_preference_run_resumes_exactly(tmp_path: Path, task: str, method: str) -> None:
    """A crash after step 3 (the last checkpoint at step 2), then --resume, gives the losses and validation of the
    uninterrupted run: lmtune's checkpoints (weights, optimizer, scheduler, RNG, data position), and for full DPO
    the reference log-probs recomputed from the base before the checkpoint loads."""
    cfg = config(tmp_path, task, method, max_steps=5, save_every=2, keep_checkpoints=3, eval_every=2)
    straight = finetune({**cfg, "output_dir": str(tmp_path / "straight")})
    run = Path(cfg["output_dir"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, after_step=[crash_at(3)])
    resumed = finetune(cfg, resume=True)
    assert _train_losses(run) == _train_losses(straight.run_dir)
    assert resumed.summary["val_loss_after"] == pytest.approx(straight.summary["val_loss_after"], abs=1e-5)
    assert resumed.summary["val_accuracy_after"] == straight.summary["val_accuracy_after"]


def test_dpo_stops_early_on_preference_accuracy_and_keeps_the_best(tmp_path: Path) -> None:
    early = {"metric": "accuracy", "mode": "max", "patience": 1}
    cfg = config(tmp_path, "dpo", max_steps=12, eval_every=2, early_stopping=early)
    s = finetune(cfg).summary
    rows = [json.loads(line) for line in (Path(cfg["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    accuracy = {r["step"]: r["accuracy"] for r in rows if r["split"] == "validation"}
    assert s["early_stopping"]["best"] == max(accuracy.values())
    assert s["final_step"] == s["best_step"] and accuracy[s["best_step"]] == max(accuracy.values())
