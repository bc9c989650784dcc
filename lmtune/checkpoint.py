"""Checkpoints that resume exactly, and atomic file writes.

A checkpoint holds the trainable weights (safetensors), the optimizer and scheduler states, the RNG states and
the loop position (step, epoch, micro-batch) in `checkpoints/step-NNNNNN/`. It is written to a temporary folder
and renamed into place, so a crash never leaves a half-written checkpoint that resume would pick up. Only the
trainable parameters are saved: for LoRA that is the adapter, so checkpoints stay small.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmtune.fileio import atomic_dir

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters() lists a tied weight once, which safetensors requires.
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loop_state: dict[str, Any],
    keep: int,
) -> Path:
    final = run_dir / CHECKPOINTS / f"{_PREFIX}{step:06d}"
    with atomic_dir(final) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
            tmp / "training_state.pt",
        )
        (tmp / "loop_state.json").write_text(json.dumps(loop_state, indent=2) + "\n", encoding="utf-8")
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "loop_state.json").exists()
    ]
    return sorted(found, key=lambda p: int(p.name.removeprefix(_PREFIX)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Restore weights, optimizer, scheduler and RNG in place; return the loop state to continue from."""
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks trainable parameters, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return json.loads((path / "loop_state.json").read_text(encoding="utf-8"))
