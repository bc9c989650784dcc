"""Early stopping: the patience rule, its config checks, and runs that overfit on purpose (8 random word strings,
a high learning rate): they stop before max_steps, keep the best weights as final/, survive a crash, and their
summary diagnoses the overfitting."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from support import write_jsonl

from lmtune.api import finetune
from lmtune.config import EarlyStoppingConfig, load_config
from lmtune.data.batching import unpacked
from lmtune.data.prepare import load_splits
from lmtune.data.tokenize import tokenize_examples
from lmtune.errors import LmtuneError
from lmtune.export import load_tuned
from lmtune.train.early_stopping import Selection, track_best
from lmtune.train.state import LoopState
from lmtune.train.validation import evaluate_loss

# --- the rule ---------------------------------------------------------------------------------------------------


def feed(values: list[float], **cfg: Any) -> tuple[LoopState, list[bool]]:
    state, improved = LoopState(), []
    for step, value in enumerate(values):
        state.step = step * 10
        improved.append(track_best(state, {"loss": value, "perplexity": 2.0**value}, Selection("loss", **cfg)))
        if state.stopped_early:
            break
    return state, improved


def test_stops_after_patience_evaluations_without_improvement():
    state, improved = feed([3.0, 2.0, 2.5, 2.1, 2.2, 1.0], patience=3)
    assert improved == [True, True, False, False, False]  # 1.0 is never seen: the run stopped
    assert state.stopped_early and (state.best_step, state.best_metric, state.bad_evals) == (10, 2.0, 3)


def test_an_improvement_resets_the_count():
    state, improved = feed([3.0, 2.9, 2.95, 2.8, 2.85, 2.9], patience=2)
    assert improved == [True, True, False, True, False, False]
    assert state.stopped_early and state.best_step == 30


def test_min_delta_is_the_smallest_change_that_counts():
    state, improved = feed([3.0, 2.95, 2.92, 2.5], patience=2, min_delta=0.1)
    assert improved == [True, False, False]  # 0.05 and 0.08 below the best are not improvements
    assert state.best_metric == 3.0


def test_mode_max_and_a_missing_metric():
    state = LoopState()
    cfg = Selection("rougeL", mode="max", patience=1)
    assert track_best(state, {"rougeL": 0.2}, cfg) and track_best(state, {"rougeL": 0.3}, cfg)
    assert not track_best(state, {"rougeL": 0.25}, cfg) and state.stopped_early and state.best_metric == 0.3
    with pytest.raises(LmtuneError, match=r"'rougeL' .* is not computed for this run \(it computes loss, perplexity\)"):
        track_best(LoopState(), {"loss": 1.0, "perplexity": 2.7}, cfg)


# --- the config -------------------------------------------------------------------------------------------------

MINIMAL = {"data": {"train": "t.jsonl"}}


def test_config_switch_and_checks():
    cfg = load_config(MINIMAL, ["train.early_stopping=true", "train.eval_every=10"])
    assert cfg.train.early_stopping == EarlyStoppingConfig(metric="auto", mode="auto", patience=3, min_delta=0.0)
    assert load_config(MINIMAL, ["train.early_stopping=false"]).train.early_stopping is None
    assert load_config(MINIMAL).train.early_stopping is None  # off by default
    with pytest.raises(LmtuneError, match=r"train\.early_stopping: needs periodic validation.*train\.eval_every"):
        load_config(MINIMAL, ["train.early_stopping.patience=2"])
    with pytest.raises(LmtuneError, match=r"train\.early_stopping: needs validation data"):
        load_config(MINIMAL, ["train.early_stopping=true", "train.eval_every=10", "data.val_fraction=0"])
    with pytest.raises(LmtuneError, match="mode: loss is better when lower; use mode: min"):
        load_config(
            MINIMAL, ["train.early_stopping.metric=loss", "train.early_stopping.mode=max", "train.eval_every=10"]
        )
    with pytest.raises(LmtuneError, match="mode: accuracy is better when higher; use mode: max"):
        load_config(
            MINIMAL, ["train.early_stopping.metric=accuracy", "train.early_stopping.mode=min", "train.eval_every=10"]
        )
    with pytest.raises(
        LmtuneError, match="metric: must be 'auto', 'loss', 'perplexity', 'accuracy', 'f1', 'margin' or 'rougeL'"
    ):
        load_config(MINIMAL, ["train.early_stopping.metric=bleu", "train.eval_every=10"])


# --- runs that overfit ------------------------------------------------------------------------------------------

WORDS = ["apple", "river", "stone", "cloud", "green", "quiet", "bread", "lamp"]
WORDS += ["north", "window", "silver", "garden", "paper", "seven", "orange", "music"]


def word_strings(seed: int, n: int) -> list[dict[str, str]]:
    """Random strings of words: nothing to learn beyond word frequencies, so fitting 8 of them is memorising."""
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(20))} for _ in range(n)]


@pytest.fixture
def overfit_config(tmp_path: Path) -> dict[str, Any]:
    train = write_jsonl(tmp_path / "train.jsonl", word_strings(1, 8))
    val = write_jsonl(tmp_path / "val.jsonl", word_strings(2, 8))
    return {
        "name": "overfit",
        "seed": 0,
        "data": {"train": str(train), "validation": str(val), "max_length": 64},
        "method": {"name": "full"},
        "train": {
            "max_steps": 80,
            "batch_size": 4,
            "lr": 1e-2,
            "scheduler": "constant",
            "warmup_steps": 0,
            "mixed_precision": "no",
            "eval_every": 2,
            "save_every": 10,
            "early_stopping": {"patience": 3},
        },
        "forgetting": {"measure": False},
    }


def validation_records(run: Path) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["split"] == "validation"}


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def test_an_overfitting_run_stops_early_and_keeps_its_best_weights(tmp_path, overfit_config):
    run = tmp_path / "run"
    summary = finetune(overfit_config, output_dir=str(run)).summary
    val = validation_records(run)
    best_step = min(val, key=val.get)

    assert summary["stopped_early"] is True and summary["stopped_at"] == summary["steps"] < 80
    assert summary["best_step"] == summary["final_step"] == best_step > 0
    assert summary["stopped_at"] == best_step + 3 * 2  # three evaluations (every 2 steps) without improvement
    assert summary["val_loss_final"] == val[best_step] < summary["val_loss_after"]
    es = summary["early_stopping"]
    assert es["best"] == val[best_step] and es["patience"] == 3 and f"at step {best_step}" in es["reason"]

    # final/ holds the kept best weights, not the last ones; rotation never deleted them.
    kept = load_file(str(run / "checkpoints" / f"best-{best_step:06d}" / "trainable.safetensors"))
    final = final_weights(run)
    assert kept.keys() == final.keys()
    for name in kept:
        torch.testing.assert_close(final[name], kept[name], rtol=0, atol=0, msg=name)
    last = load_file(str(run / "checkpoints" / f"step-{summary['stopped_at']:06d}" / "trainable.safetensors"))
    assert any(not torch.equal(last[n], final[n]) for n in final)
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("best-")) == [
        f"best-{best_step:06d}"
    ]

    # The final model, loaded back and scored independently, has the best validation loss.
    model, tokenizer, cfg = load_tuned(run)
    splits = load_splits(cfg.data, cfg.seed)
    rows = unpacked(tokenize_examples(splits.validation, tokenizer, max_length=cfg.data.max_length)[0])
    accelerator = Accelerator(mixed_precision="no", cpu=True)
    loss = evaluate_loss(model, rows, 4, tokenizer.pad_token_id, accelerator)["loss"]
    assert loss == pytest.approx(val[best_step], rel=1e-5)

    # The diagnosis of the curves is in the summary.
    kinds = [f["kind"] for f in summary["diagnosis"]]
    assert "overfitting" in kinds
    overfitting = summary["diagnosis"][kinds.index("overfitting")]
    assert f"step {best_step}" in overfitting["message"] and overfitting["advice"]


def test_resume_after_a_crash_keeps_the_best_so_far(tmp_path, overfit_config):
    straight = tmp_path / "straight"
    expected = finetune(overfit_config, output_dir=str(straight)).summary
    best_step = expected["best_step"]
    assert best_step % 10 != 0, "the crash below must fall between a new best and the next checkpoint"
    checkpoint_before = best_step // 10 * 10

    # Crash right after the best evaluation was kept, before a checkpoint recorded it: the checkpoint to resume
    # from refers to an older best, which must still be on disk, and the newer one is stale.
    def crash(state: LoopState) -> None:
        if state.step == best_step:
            raise RuntimeError("simulated crash")

    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(overfit_config, output_dir=str(crashed), after_step=[crash])
    saved = json.loads((crashed / "checkpoints" / f"step-{checkpoint_before:06d}" / "loop_state.json").read_text())
    bests = sorted(p.name for p in (crashed / "checkpoints").iterdir() if p.name.startswith("best-"))
    assert bests == sorted({f"best-{saved['best_step']:06d}", f"best-{best_step:06d}"})
    assert saved["best_step"] < best_step and saved["bad_evals"] >= 0

    summary = finetune(overfit_config, output_dir=str(crashed), resume=True).summary
    for key in ("stopped_early", "stopped_at", "best_step", "final_step", "val_loss_final", "steps"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-6), key
    a, b = final_weights(straight), final_weights(crashed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=0, msg=name)

    # Resuming a run that already stopped early trains no further.
    again = finetune(overfit_config, output_dir=str(crashed), resume=True).summary
    assert again["steps"] == expected["steps"] and again["best_step"] == best_step


def test_with_keep_last_the_last_weights_are_final(tmp_path, overfit_config):
    overfit_config["train"] = {**overfit_config["train"], "early_stopping": None, "max_steps": 30, "keep": "last"}
    run = tmp_path / "run"
    summary = finetune(overfit_config, output_dir=str(run)).summary
    assert summary["stopped_early"] is False and summary["stopped_at"] == summary["final_step"] == 30
    assert summary["best_step"] is None and "early_stopping" not in summary
    assert not any(p.name.startswith("best-") for p in (run / "checkpoints").iterdir())
    last = load_file(str(run / "checkpoints" / "step-000030" / "trainable.safetensors"))
    for name, tensor in final_weights(run).items():
        torch.testing.assert_close(tensor, last[name], rtol=0, atol=0, msg=name)


def test_a_tie_on_the_task_metric_goes_to_the_lower_loss_and_auto_resolves_per_task():
    from lmtune.config import TrainConfig
    from lmtune.train.early_stopping import selection_for

    state, watch = LoopState(), Selection("accuracy", mode="max")
    for step, (accuracy, loss) in enumerate([(0.9, 0.5), (0.95, 0.4), (0.95, 0.3), (0.95, 0.35), (0.9, 0.1)], 1):
        state.step = step
        track_best(state, {"accuracy": accuracy, "loss": loss}, watch)
    assert (state.best_step, state.best_metric, state.best_loss) == (3, 0.95, 0.3)
    assert selection_for(TrainConfig(), "f1") == Selection("f1", "max")
    assert selection_for(TrainConfig(best_metric="loss"), "f1") == Selection("loss", "min")
    assert selection_for(TrainConfig(keep="last"), "f1") is None
    early = TrainConfig(eval_every=5, early_stopping={"patience": 2})
    assert selection_for(early, "accuracy") == Selection("accuracy", "max", 0.0, 2)
