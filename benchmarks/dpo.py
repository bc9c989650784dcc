"""DPO: lmtune's loop against trl's DPOTrainer on the same model, pairs and budget, one after the other.

The pairs are built from real data (Code Alpaca in ../shared/data): the chosen answer is the record's own output,
the rejected one the output of another record, so the preference is real text against real text of varied
lengths. Both runners train the 33.5M Llama of benchmarks/assets.py with LoRA r16 on every linear layer, batch 8,
the same learning rate, steps, max length (long enough that neither truncates) and precision (bf16 autocast where
the CPU computes it natively, as lmtune's `auto` resolves it). Each runs in its own process (its own peak RSS),
sequentially, so neither competes for the cores; the first step (warm-up) is not timed.

    python benchmarks/dpo.py                 # the table
    python benchmarks/dpo.py --json          # ... and one JSON line of the ratios
    python benchmarks/dpo.py --steps 10 --pairs 200
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import CACHE, SHARED, model_dir, tokenizer_dir
from runners import LORA, peak_memory_mb


def pairs_file(n: int) -> Path:
    """n preference pairs from Code Alpaca: the record's output chosen, another record's output rejected."""
    out = CACHE / "dpo" / f"pairs-{n}.jsonl"
    if out.is_file():
        return out
    records = [r for r in json.loads((SHARED / "instruct" / "code_alpaca_2k.json").read_text()) if r["output"].strip()]
    rng = random.Random(0)
    rng.shuffle(records)
    rows = []
    for i, rec in enumerate(records[:n]):
        prompt = f"### Instruction:\n{rec['instruction']}\n\n"
        if rec["input"].strip():
            prompt += f"### Input:\n{rec['input']}\n\n"
        other = records[(i + 1 + rng.randrange(len(records) - 1)) % len(records)]
        rows.append({"prompt": prompt + "### Response:\n", "chosen": rec["output"], "rejected": other["output"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def _bf16() -> bool:
    from lmtune.train.launch import resolve_mixed_precision

    return resolve_mixed_precision("auto") == "bf16"


def run_lmtune(args: argparse.Namespace, data: Path, out: str, times: list[float]) -> float:
    from lmtune.api import finetune

    cfg = {
        "task": "dpo",
        "model": {"name": str(model_dir()), "tokenizer": str(tokenizer_dir()),
                  "dtype": "bfloat16" if args.bf16_base else "float32"},
        "method": {"name": "lora", "r": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"]},
        "data": {"train": str(data), "val_fraction": 0.0, "max_length": args.max_length},
        "forgetting": {"measure": False},
        "preference": {"beta": 0.1},
        "train": {"lr": args.lr, "batch_size": 8, "max_steps": args.steps, "warmup_steps": 0, "scheduler": "linear",
                  "mixed_precision": "bf16" if _bf16() else "no", "log_every": 1, "save_every": None},
    }  # fmt: skip
    t0 = [time.perf_counter()]

    def step(state: Any) -> None:
        times.append(time.perf_counter() - t0[0])
        t0[0] = time.perf_counter()

    summary = finetune(cfg, overrides=args.set, output_dir=out, after_step=[step]).summary
    return float(summary["last_train_loss"])


def run_trl(args: argparse.Namespace, data: Path, out: str, times: list[float]) -> float:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    dtype = "bfloat16" if args.bf16_base else "float32"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model_dir()), dtype=dtype), LoraConfig(**LORA))
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    config = DPOConfig(
        output_dir=out, per_device_train_batch_size=8, learning_rate=args.lr, max_steps=args.steps, beta=0.1,
        lr_scheduler_type="linear", warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[],
        bf16=_bf16(), use_cpu=True, max_length=args.max_length, truncation_mode="keep_start",
        dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t0)

        def on_log(self, *a: Any, logs: dict | None = None, **k: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.add_callback(Clock())
    trainer.train()
    return losses[-1]


RUNNERS = {"trl-DPOTrainer": run_trl, "lmtune": run_lmtune}


def _worker(name: str, args: argparse.Namespace, data: Path, conn: Any) -> None:
    os.environ["TQDM_DISABLE"] = "1"
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the runner's own chatter)
    import torch

    torch.manual_seed(0)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        loss = RUNNERS[name](args, data, out, times)
    conn.send({"times": times, "loss": loss, **peak_memory_mb()})


def measure(name: str, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(name, args, data, there))
    proc.start()
    result = here.recv()
    proc.join()
    timed = result["times"][1:] or result["times"]  # the first step warms up
    step_s = statistics.median(timed)
    return {"step_s": step_s, "pairs_per_s": 8 / step_s, "peak_rss_mb": result["peak_rss_mb"], "loss": result["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="a config override for the lmtune runner")
    parser.add_argument("--only", choices=sorted(RUNNERS), help="run one runner (lever checks)")
    parser.add_argument("--bf16-base", action="store_true", help="both runners load the frozen base in bf16")
    args = parser.parse_args()
    data = pairs_file(args.pairs)
    if args.only:
        r = measure(args.only, args, data)
        print(json.dumps({"runner": args.only, "set": args.set, **{k: round(v, 4) for k, v in r.items()}}))
        return
    results = {name: measure(name, args, data) for name in RUNNERS}
    base = results["trl-DPOTrainer"]
    print(f"DPO, {args.steps} steps of 8 pairs, LoRA r16, bf16={_bf16()}: lmtune vs trl's DPOTrainer")
    print(f"{'runner':<16} {'pairs/s':>8} {'x trl':>6} {'step s':>7} {'peak RSS MB':>12} {'x trl':>6} {'loss':>8}")
    for name, r in results.items():
        print(
            f"{name:<16} {r['pairs_per_s']:>8.2f} {r['pairs_per_s'] / base['pairs_per_s']:>6.2f} {r['step_s']:>7.3f} "
            f"{r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] / base['peak_rss_mb']:>6.2f} {r['loss']:>8.4f}"
        )
    mine = results["lmtune"]
    ratios = {
        "speedup": round(mine["pairs_per_s"] / base["pairs_per_s"], 3),
        "memory_ratio": round(mine["peak_rss_mb"] / base["peak_rss_mb"], 3),
        "loss_lmtune": round(mine["loss"], 4),
        "loss_trl": round(base["loss"], 4),
    }
    if args.json:
        print(json.dumps(ratios))


if __name__ == "__main__":
    main()
