"""One training process for tests/test_checkpoint_fsdp.py and test_checkpoint_deepspeed.py: lmtune's loop on the
preset tiny Llama, sharded with FSDP2 (`fully_shard`, as accelerate's FSDP2 preparation does) when torchrun starts
several processes, plain when one. accelerate puts FSDP only on GPUs, so the test shards the model itself;
everything after that (loop, checkpoints, best weights, final save, evaluation) is lmtune's code as `finetune`
runs it. Under DeepSpeed (ACCELERATE_USE_DEEPSPEED and ACCELERATE_DEEPSPEED_ZERO_STAGE set, as `accelerate launch`
sets them) accelerate's `prepare` builds the ZeRO engine, as in `finetune`.

    python tests/fsdp_worker.py OUT METHOD STEPS [--resume CHECKPOINT] [--grad-accum N] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from lmtune.config import ModelConfig, TrainConfig
from lmtune.config.methods import FullMethod, LoraMethod
from lmtune.data.batching import Row
from lmtune.export import final_state, save_final
from lmtune.methods import apply_method, transformer_blocks
from lmtune.model import load_model, load_tokenizer
from lmtune.train.checkpoint import (
    is_sharded,
    load_best,
    load_checkpoint,
    optimizer_state_of,
    save_best,
    save_checkpoint,
    trainable_state,
    unwrapped,
)
from lmtune.train.launch import configure_deepspeed, make_accelerator, whole_model_loading
from lmtune.train.loop import Hooks, loss_head, make_optimizer, train_loop
from lmtune.train.objectives import OBJECTIVES
from lmtune.train.state import LoopState
from lmtune.train.validation import evaluate_loss

PRESET = "preset:tiny-chat"


def rows(n: int, seed: int) -> list[Row]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(3, 250, (6 + i % 5,), generator=g).tolist()
        out.append(Row(input_ids=ids, labels=ids))
    return out


WORKER = Path(__file__)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run(out: Path, method: str, processes: int, *extra: str, zero: int | None = None) -> dict:
    """Run this worker (from a test) on 1 process or, under torchrun, 2; `zero`: under DeepSpeed ZeRO that stage,
    set in the environment as `accelerate launch` sets it."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"] if processes == 2 else []
    cmd = [*(launcher or [sys.executable]), str(WORKER), str(out), method, "4", *extra]
    deepspeed = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(zero)} if zero else {}
    done = subprocess.run(cmd, env={**ENV, **deepspeed}, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def close(a: list[float], b: list[float], rel: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * abs(y) for x, y in zip(a, b, strict=True))


def final_loss(model: torch.nn.Module) -> float:
    return evaluate_loss(model.eval(), rows(5, 2), 1, 0, Accelerator(cpu=True))["loss"]


def check_best_and_final_adapter(run_dir: Path, result: dict) -> None:
    """A run's best weights came back after a later step moved them, and its final/ holds only the LoRA tensors,
    which load with peft and give the run's last validation loss."""
    from peft import PeftModel

    _, _, kept, moved, restored = result["validation"]
    assert moved != kept and restored == kept  # a later step changed the weights; the best ones came back
    saved = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    tuned = PeftModel.from_pretrained(load_model(ModelConfig(name=PRESET)), run_dir / "final")
    assert abs(final_loss(tuned) - restored) <= 1e-5 * restored


def state_difference(checkpoint: Path, model: torch.nn.Module, optimizer: Any) -> float | None:
    """The largest difference between the weights and optimizer states a checkpoint holds and what the model and
    optimizer hold after loading it (gathered whole again; None on the processes that do not get them)."""
    weights = trainable_state(model)
    optim = optimizer_state_of(model, optimizer)
    if not weights or not optim["state"]:
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
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--max-bad-steps", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="mixed precision bf16 (DeepSpeed: bf16 weights, fp32 masters)")
    args = ap.parse_args()

    accelerator = make_accelerator(
        "bf16" if args.bf16 else "no"
    )  # under torchrun: gloo process group, process index and count
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    torch.manual_seed(0)
    with whole_model_loading(accelerator):
        model = load_model(ModelConfig(name=PRESET))
    method = LoraMethod(r=4, dropout=0.0) if args.method == "lora" else FullMethod()
    model = apply_method(model, method)
    if accelerator.num_processes > 1 and not deepspeed:
        mesh = init_device_mesh("cpu", (accelerator.num_processes,))
        for block in transformer_blocks(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        assert is_sharded(model)
    # A constant rate, so that the step after the best-weights save still changes them.
    cfg = TrainConfig(lr=args.lr, batch_size=2, grad_accum=args.grad_accum, max_grad_norm=1.0, save_every=2,
                      weight_decay=0.1, scheduler="constant", warmup_steps=0, max_bad_steps=args.max_bad_steps)  # fmt: skip
    optimizer, scheduler = make_optimizer(model, cfg, args.steps)
    if deepspeed:
        configure_deepspeed(accelerator, cfg)
        model, optimizer = accelerator.prepare(model, optimizer)
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
    whole = final_state(unwrapped(model))
    if main_process:
        save_final(args.out, unwrapped(model), load_tokenizer(ModelConfig(name=PRESET)), whole)
        result = {
            "losses": [r["loss"] for r in log],
            "skipped": [r["step"] for r in log if r.get("skipped")],
            "validation": [before["loss"], after["loss"], kept["loss"], moved["loss"], restored["loss"]],
            "loaded": loaded,
            "sharded": is_sharded(unwrapped(model)),
            "deepspeed": deepspeed,
            "chunked_loss": loss_head(model, accelerator, OBJECTIVES["sft"]) is not None,
        }
        (args.out / "result.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()  # shuts the process group down before the interpreter's exit tears threads down


if __name__ == "__main__":
    main()
