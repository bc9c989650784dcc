"""One training process for tests/test_checkpoint_fsdp.py: lmtune's loop on the preset tiny Llama, sharded with
FSDP2 (`fully_shard`, as accelerate's FSDP2 preparation does) when torchrun starts several processes, plain when
one. accelerate puts FSDP only on GPUs, so the test shards the model itself; everything after that (loop,
checkpoints, best weights, final save, evaluation) is lmtune's code as `finetune` runs it.

    python tests/fsdp_worker.py OUT METHOD STEPS [--resume CHECKPOINT] [--grad-accum N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from lmtune.checkpoint import is_sharded, load_checkpoint, save_checkpoint, trainable_state
from lmtune.config import ModelConfig, TrainConfig
from lmtune.config.methods import FullMethod, LoraMethod
from lmtune.data.batching import Row
from lmtune.export import final_state, save_final
from lmtune.loop import Hooks, LoopState, evaluate_loss, load_best, make_optimizer, save_best, train_loop
from lmtune.methods import apply_method, transformer_blocks
from lmtune.model import load_model, load_tokenizer

PRESET = "preset:tiny-chat"


def rows(n: int, seed: int) -> list[Row]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(3, 250, (6 + i % 5,), generator=g).tolist()
        out.append(Row(input_ids=ids, labels=ids))
    return out


def state_difference(checkpoint: Path, model: torch.nn.Module, optimizer: Any) -> float | None:
    """The largest difference between the weights and optimizer states a checkpoint holds and what the model and
    optimizer hold after loading it (gathered whole again; None on the processes that do not get them)."""
    weights = trainable_state(model)
    optim = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not weights:
        return None
    saved = load_file(str(checkpoint / "trainable.safetensors"))
    saved_optim = torch.load(checkpoint / "training_state.pt", weights_only=True)["optimizer"]["state"]
    assert weights.keys() == saved.keys() and optim["state"].keys() == saved_optim.keys()
    diffs = [float((weights[k] - saved[k]).abs().max()) for k in saved]
    diffs += [
        float((v - saved_optim[k][f]).abs().max()) for k, fields in optim["state"].items() for f, v in fields.items()
    ]
    return max(diffs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("method", choices=["lora", "full"])
    ap.add_argument("steps", type=int)
    ap.add_argument("--resume", type=Path)
    ap.add_argument("--grad-accum", type=int, default=1)
    args = ap.parse_args()

    accelerator = Accelerator(cpu=True)  # under torchrun: gloo process group, process index and count
    torch.manual_seed(0)
    model = load_model(ModelConfig(name=PRESET))
    method = LoraMethod(r=4, dropout=0.0) if args.method == "lora" else FullMethod()
    model = apply_method(model, method)
    if accelerator.num_processes > 1:
        mesh = init_device_mesh("cpu", (accelerator.num_processes,))
        for block in transformer_blocks(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        assert is_sharded(model)
    # A constant rate, so that the step after the best-weights save still changes them.
    cfg = TrainConfig(lr=1e-2, batch_size=2, grad_accum=args.grad_accum, max_grad_norm=1.0, save_every=2,
                      weight_decay=0.1, scheduler="constant", warmup_steps=0)  # fmt: skip
    optimizer, scheduler = make_optimizer(model, cfg, args.steps)
    train, validation = rows(16, 1), rows(5, 2)  # 5 rows: 3 on one process and 2 on the other
    main_process = accelerator.is_main_process
    state = LoopState()
    loaded = None
    if args.resume:
        state = LoopState(**load_checkpoint(args.resume, model, optimizer, scheduler))
        loaded = state_difference(args.resume, model, optimizer)
    log: list[dict] = []

    def checkpoint(s: LoopState) -> None:
        save_checkpoint(args.out, s.step, model, optimizer, scheduler, s.as_dict(), 5, write=main_process)

    hooks = Hooks(on_log=log.append, on_checkpoint=checkpoint)
    before = evaluate_loss(model, validation, 1, 0, accelerator)
    train_loop(model=model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator, rows=train,
               pad_id=0, cfg=cfg, seed=0, steps=args.steps, state=state, hooks=hooks)  # fmt: skip
    after = evaluate_loss(model, validation, 1, 0, accelerator)
    # The best-weights round trip: save now, train on, then put the saved weights back.
    save_best(args.out, state.step, model, write=main_process)
    accelerator.wait_for_everyone()
    kept = evaluate_loss(model, validation, 1, 0, accelerator)
    train_loop(model=model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator, rows=train,
               pad_id=0, cfg=cfg, seed=0, steps=state.step + 1, state=state, hooks=Hooks())  # fmt: skip
    moved = evaluate_loss(model, validation, 1, 0, accelerator)
    load_best(args.out, state.step - 1, model)
    restored = evaluate_loss(model, validation, 1, 0, accelerator)
    whole = final_state(model)
    if main_process:
        save_final(args.out, model, load_tokenizer(ModelConfig(name=PRESET)), whole)
        result = {
            "losses": [r["loss"] for r in log],
            "validation": [before["loss"], after["loss"], kept["loss"], moved["loss"], restored["loss"]],
            "loaded": loaded,
            "sharded": is_sharded(model),
        }
        (args.out / "result.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
