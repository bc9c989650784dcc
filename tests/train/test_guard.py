"""The loop's guard against divergence (lmtune.train.guard): a non-finite loss or gradient norm skips the update,
too many stop the run, and loss spikes are reported."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from lmtune.config import FullMethod, ModelConfig, TrainConfig
from lmtune.data.batching import unpacked
from lmtune.errors import Diverged
from lmtune.methods import apply_method
from lmtune.model import load_model
from lmtune.train.checkpoint import list_checkpoints, save_checkpoint
from lmtune.train.guard import StepGuard, guarded_update
from lmtune.train.loop import Hooks, train_loop
from lmtune.train.objectives import Objective, causal_lm_loss
from lmtune.train.state import LoopState


@pytest.fixture
def accelerator() -> Accelerator:
    return Accelerator(mixed_precision="no", cpu=True)


def tiny() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("max_grad_norm", [1.0, None])
def test_a_non_finite_loss_or_gradient_skips_the_update(accelerator, max_grad_norm):
    model, optimizer = tiny()
    before = weights(model)
    model(torch.ones(1, 3)).sum().backward()
    params = list(model.parameters())
    assert guarded_update(accelerator, optimizer, params, max_grad_norm, float("nan"))[1] is False
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model), strict=True))
    assert all(p.grad is None for p in params)  # the bad gradients do not leak into the next step

    (model(torch.ones(1, 3)).sum() * float("inf")).backward()  # a finite loss figure, but infinite gradients
    norm, taken = guarded_update(accelerator, optimizer, params, max_grad_norm, 1.0)
    assert not taken and all(torch.equal(a, b) for a, b in zip(before, weights(model), strict=True))

    model(torch.ones(1, 3)).sum().backward()
    norm, taken = guarded_update(accelerator, optimizer, params, max_grad_norm, 1.0)
    assert taken and not torch.equal(before[0], weights(model)[0])
    assert (norm is None) == (max_grad_norm is None)


def test_the_guard_counts_skips_and_stops_one_past_the_limit():
    guard, state = StepGuard(max_bad_steps=2), LoopState()
    for step, loss in enumerate([1.0, math.nan, 1.0, math.inf, 1.0], start=1):
        state.step = step
        guard.judge(state, loss, taken=math.isfinite(loss))
        guard.check(state)
    assert (state.bad_steps, state.first_bad_step) == (2, 2)
    state.step = 6
    assert "3 of train.max_bad_steps 2" in guard.judge(state, 1.0, taken=False)
    with pytest.raises(Diverged) as caught:
        guard.check(state)
    assert (caught.value.step, caught.value.first_bad, caught.value.bad_steps) == (6, 2, 3)


def test_a_loss_spike_is_a_warning_not_a_skip():
    guard, state = StepGuard(max_bad_steps=0), LoopState()
    for step in range(1, 12):
        state.step = step
        assert guard.judge(state, 2.0 + 0.01 * step, taken=True) is None
    state.step = 12
    warning = guard.judge(state, 20.0, taken=True)
    assert warning is not None and "loss spike" in warning and "step 12" in warning
    guard.check(state)  # a spike is not a divergence
    assert state.bad_steps == 0


def nan_at(calls: set[int]) -> Objective:
    """The causal-LM loss, but NaN at the given forward passes (counted from 1): a broken batch."""
    count = {"n": 0}

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        count["n"] += 1
        total, n = causal_lm_loss(logits, labels)
        return (total * float("nan") if count["n"] in calls else total), n

    return Objective(loss)


def run_loop(accelerator, tokenized, objective, max_bad_steps, hooks, model=None) -> LoopState:
    """Three steps of one micro-batch each, a checkpoint after every step."""
    model = model or apply_method(load_model(ModelConfig(name="preset:tiny-chat")), FullMethod())
    cfg = TrainConfig(batch_size=2, lr=1e-3, mixed_precision="no", save_every=1, max_bad_steps=max_bad_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return train_loop(model=model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator,
                      rows=unpacked(tokenized), pad_id=0, cfg=cfg, seed=0, steps=3, state=LoopState(), hooks=hooks,
                      objective=objective)  # fmt: skip


def test_the_loop_skips_a_broken_batch_and_goes_on(accelerator, tokenized):
    model = apply_method(load_model(ModelConfig(name="preset:tiny-chat")), FullMethod())
    snapshots, saved, logged = {}, [], []
    hooks = Hooks(
        on_log=logged.append,
        on_checkpoint=lambda s: saved.append(s.step),
        after_step=[lambda s: snapshots.__setitem__(s.step, weights(model))],
    )
    state = run_loop(accelerator, tokenized, nan_at({2}), 1, hooks, model)
    assert state.step == 3 and state.bad_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2], strict=True))  # step 2 changed nothing
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[2], snapshots[3], strict=True))
    assert saved == [1, 3]  # no checkpoint right after a skipped update
    assert [r.get("skipped", False) for r in logged] == [False, True, False]
    assert "update skipped" in logged[1]["warning"]


def test_the_loop_stops_past_max_bad_steps(accelerator, tokenized):
    saved = []
    with pytest.raises(Diverged) as caught:
        run_loop(accelerator, tokenized, nan_at({2, 3}), 1, Hooks(on_checkpoint=lambda s: saved.append(s.step)))
    assert (caught.value.step, caught.value.first_bad, caught.value.bad_steps) == (3, 2, 2)
    assert saved == [1]


def test_a_checkpoint_with_non_finite_weights_is_never_written(accelerator, tokenized, tmp_path):
    """An update can overflow the weights while its own loss was finite: the next checkpoint finds out, writes
    nothing, and stops the run as a divergence (the recipe then falls back to the previous checkpoint)."""
    model = apply_method(load_model(ModelConfig(name="preset:tiny-chat")), FullMethod())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def overflow(state: LoopState) -> None:
        if state.step == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))

    def checkpoint(state: LoopState) -> None:
        save_checkpoint(tmp_path, state.step, model, optimizer, scheduler, state.as_dict(), keep=5)

    cfg = TrainConfig(batch_size=2, lr=1e-3, mixed_precision="no", save_every=1)
    with pytest.raises(Diverged, match="the weights after step 2 hold NaN or infinite values"):
        train_loop(model=model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator,
                   rows=unpacked(tokenized), pad_id=0, cfg=cfg, seed=0, steps=3, state=LoopState(),
                   hooks=Hooks(on_checkpoint=checkpoint, after_step=[overflow]))  # fmt: skip
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000001"]
