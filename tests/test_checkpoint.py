from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from lmtune.config import LoraMethod, ModelConfig, TrainConfig
from lmtune.methods import apply_method
from lmtune.model import load_model
from lmtune.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from lmtune.train.loop import make_optimizer

CFG = TrainConfig(lr=1e-2, weight_decay=0.1, warmup_steps=2, scheduler="cosine")


def train_steps(model, optimizer, scheduler, steps: int = 2) -> None:
    ids = torch.tensor([[1, 276, 201, 74, 75, 287, 2], [1, 275, 201, 288, 336, 81, 2]])
    for _ in range(steps):
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def assert_same_tree(a, b, path="") -> None:
    # A state saved by name (torch.distributed.checkpoint) comes back with lists where the optimizer had tuples.
    sequence = (list, tuple)
    assert type(a) is type(b) or (isinstance(a, sequence) and isinstance(b, sequence)), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_tree(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


# --- save / load ---------------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path, tiny_model):
    optimizer, scheduler = make_optimizer(tiny_model, CFG, steps=10)
    train_steps(tiny_model, optimizer, scheduler)
    random.seed(5)
    torch.manual_seed(5)
    ckpt = save_checkpoint(tmp_path, 2, tiny_model, optimizer, scheduler, {"step": 2, "epoch": 0}, keep=3)
    expected_random = (random.random(), torch.rand(3))

    other = load_model(ModelConfig(name="preset:tiny-chat"))  # an independent model to restore into
    other_opt, other_sched = make_optimizer(other, CFG, steps=10)
    assert not torch.equal(other.lm_head.weight, tiny_model.lm_head.weight)
    random.seed(99)
    torch.manual_seed(99)
    loop_state = load_checkpoint(ckpt, other, other_opt, other_sched)

    assert loop_state == {"step": 2, "epoch": 0}
    for (name, a), (_, b) in zip(tiny_model.named_parameters(), other.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert_same_tree(other_opt.state_dict(), optimizer.state_dict())
    assert other_sched.state_dict() == scheduler.state_dict()
    assert other_sched.get_last_lr() == scheduler.get_last_lr()
    assert random.random() == expected_random[0]
    assert torch.equal(torch.rand(3), expected_random[1])

    # and training continues identically from there
    train_steps(tiny_model, optimizer, scheduler, 1)
    train_steps(other, other_opt, other_sched, 1)
    for (name, a), (_, b) in zip(tiny_model.named_parameters(), other.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_training_state_loads_with_weights_only(tmp_path, tiny_model):
    optimizer, scheduler = make_optimizer(tiny_model, CFG, steps=10)
    train_steps(tiny_model, optimizer, scheduler, 1)
    ckpt = save_checkpoint(tmp_path, 1, tiny_model, optimizer, scheduler, {"step": 1}, keep=1)
    state = torch.load(ckpt / "training_state.pt", map_location="cpu", weights_only=True)
    assert set(state) == {"optimizer", "scheduler", "rng"}
    assert state["optimizer"]["state"]  # Adam moments were saved
    assert sorted(p.name for p in ckpt.iterdir()) == ["loop_state.json", "trainable.safetensors", "training_state.pt"]


def test_optimizer_states_are_saved_by_name_and_older_positional_ones_still_load(tmp_path, tiny_model):
    optimizer, scheduler = make_optimizer(tiny_model, CFG, steps=10)
    train_steps(tiny_model, optimizer, scheduler, 1)
    ckpt = save_checkpoint(tmp_path, 1, tiny_model, optimizer, scheduler, {"step": 1}, keep=1)
    state = torch.load(ckpt / "training_state.pt", map_location="cpu", weights_only=True)
    names = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert set(state["optimizer"]["state"]) == names  # loads into a DDP, FSDP or plain model alike
    # A checkpoint written before (the optimizer's own positional state dict) loads as it did.
    state["optimizer"] = optimizer.state_dict()
    torch.save(state, ckpt / "training_state.pt")
    other = load_model(ModelConfig(name="preset:tiny-chat"))
    other_opt, other_sched = make_optimizer(other, CFG, steps=10)
    load_checkpoint(ckpt, other, other_opt, other_sched)
    assert_same_tree(other_opt.state_dict(), optimizer.state_dict())


def test_lora_checkpoint_holds_only_the_adapter(tmp_path, tiny_model):
    model = apply_method(tiny_model, LoraMethod(r=2, dropout=0.0))
    optimizer, scheduler = make_optimizer(model, CFG, steps=10)
    ckpt = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {"step": 1}, keep=1)
    saved = load_file(str(ckpt / "trainable.safetensors"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved) == trainable
    assert all("lora_" in n for n in saved)


def test_loading_into_a_model_with_other_trainable_parameters_fails(tmp_path, tiny_model):
    optimizer, scheduler = make_optimizer(tiny_model, CFG, steps=10)
    for p in tiny_model.model.layers[0].parameters():
        p.requires_grad_(False)
    ckpt = save_checkpoint(tmp_path, 1, tiny_model, optimizer, scheduler, {"step": 1}, keep=1)
    for p in tiny_model.parameters():
        p.requires_grad_(True)
    with pytest.raises(RuntimeError, match="lacks trainable parameters"):
        load_checkpoint(ckpt, tiny_model, optimizer, scheduler)


# --- bookkeeping ---------------------------------------------------------------------------------


def test_only_the_last_n_checkpoints_are_kept(tmp_path, tiny_model):
    optimizer, scheduler = make_optimizer(tiny_model, CFG, steps=10)
    for step in (5, 10, 100, 1000):
        save_checkpoint(tmp_path, step, tiny_model, optimizer, scheduler, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000100", "step-001000"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000100", "step-001000"]
    assert latest_checkpoint(tmp_path).name == "step-001000"  # numeric, not lexical, order


def test_saving_the_same_step_again_replaces_it(tmp_path, tiny_model):
    optimizer, scheduler = make_optimizer(tiny_model, CFG, steps=10)
    save_checkpoint(tmp_path, 3, tiny_model, optimizer, scheduler, {"step": 3, "v": 1}, keep=2)
    ckpt = save_checkpoint(tmp_path, 3, tiny_model, optimizer, scheduler, {"step": 3, "v": 2}, keep=2)
    assert json.loads((ckpt / "loop_state.json").read_text())["v"] == 2
    assert len(list_checkpoints(tmp_path)) == 1


def test_latest_checkpoint_ignores_half_written_directories(tmp_path, tiny_model):
    assert latest_checkpoint(tmp_path) is None
    optimizer, scheduler = make_optimizer(tiny_model, CFG, steps=10)
    save_checkpoint(tmp_path, 2, tiny_model, optimizer, scheduler, {"step": 2}, keep=5)
    root = tmp_path / "checkpoints"
    (root / "step-000009").mkdir()  # crashed before loop_state.json
    (root / "step-000009" / "trainable.safetensors").write_bytes(b"partial")
    (root / ".step-000011.tmp").mkdir()  # a temporary folder never renamed into place
    (root / ".step-000011.tmp" / "loop_state.json").write_text("{}")
    (root / "notes.txt").write_text("not a checkpoint")
    assert latest_checkpoint(tmp_path).name == "step-000002"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002"]
