"""Trained tokens/s, step time, peak memory and validation loss of lmtune against the Hugging Face Trainer and TRL
baselines: same model, data and hyperparameters, run side by side in one invocation.

Every runner is its own process (so each has its own peak RSS), and they take turns step by step: the
orchestrator lets one runner do one optimizer step while the others wait blocked, then hands over to the next.
Machine noise therefore hits all of them alike, and no two ever compete for the cores. The first step of each
run (warm-up: allocator, lazy inits) is not counted.

    python benchmarks/throughput.py                 # the variable-length set and Code Alpaca
    python benchmarks/throughput.py --json          # ... ending with one JSON line of the ratios
    python benchmarks/throughput.py --levers        # lmtune with each speed lever switched off in turn
    python benchmarks/throughput.py --scaling       # lmtune vs the plain baseline at 256..2048 tokens, 1x/4x data
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import CACHE, Assets, code_alpaca_set, first, model_dir, variable_length_set
from runners import RUNNERS, Spec, peak_memory_mb, validation_loss

PLAIN = "hf-plain"


def contenders(base: Spec, baselines: bool = True) -> dict[str, Spec]:
    out: dict[str, Spec] = {}
    if baselines:
        out[PLAIN] = replace(base, runner="hf")
        out["hf-grouped-bf16"] = replace(base, runner="hf", grouped=True, bf16=True)
        out["trl-padding-free-bf16"] = replace(base, runner="trl", bf16=True)
    out["lmtune"] = replace(base, runner="lmtune")
    return out


# Each lever of lmtune switched off on its own (the config knob that turns it off), measured beside all-on.
LEVERS = {
    "bf16 autocast": ("train.mixed_precision=no",),
    "length grouping": ("train.batching=random",),
    "chunked loss": ("train.chunked_loss=false",),
    "keep host memory": ("train.keep_host_memory=false",),
    "fast dropout": ("train.fast_dropout=false",),
    "rounded batch lengths": ("train.pad_to_multiple_of=1",),
}
# Candidates that are not defaults, measured the same way (with "+": switched on).
EXTRAS = {
    "+ frozen base weights in bf16": ("model.dtype=bfloat16",),
}


def _worker(name: str, spec_dict: dict[str, Any], conn: Any, log: str) -> None:
    """One runner in its own process: train, yielding the CPU after each step, then score validation."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["TQDM_DISABLE"] = "1"
    import torch

    torch.manual_seed(0)
    spec = Spec(**{**spec_dict, "overrides": tuple(spec_dict["overrides"])})
    conn.send(("ready",))
    conn.recv()
    steps: list[tuple[int, float]] = []
    t = [time.perf_counter()]

    memory: dict[str, float] = {}

    def on_step(tokens: int) -> None:
        steps.append((tokens, time.perf_counter() - t[0]))
        memory.update(peak_memory_mb())  # peaks up to the end of training (not of saving and reloading after it)
        conn.send(("step", len(steps)))
        conn.recv()
        t[0] = time.perf_counter()

    try:
        model, tok = RUNNERS[spec.runner](spec, on_step)
        val = validation_loss(model, spec, tok)
    except Exception as e:  # reported to the orchestrator, which prints the log's tail
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("done", {"steps": steps, "val_loss": val, **memory}))


def race(specs: dict[str, Spec], label: str) -> dict[str, dict[str, Any]]:
    """Run the specs in lock-step, one optimizer step each in turn; returns the figures per runner."""
    ctx = mp.get_context("spawn")
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: dict[str, tuple[Any, Any]] = {}
    for name, spec in specs.items():
        parent, child = ctx.Pipe()
        log = str(logs / f"{label}-{name}.log")
        p = ctx.Process(target=_worker, args=(name, asdict(spec), child, log), daemon=True)
        p.start()
        procs[name] = (p, parent)
    for _, conn in procs.values():
        conn.recv()  # ready
    results: dict[str, dict[str, Any]] = {}
    alive = list(procs)
    while alive:
        for name in list(alive):
            conn = procs[name][1]
            conn.send("go")
            try:
                msg = conn.recv()
            except EOFError:
                msg = ("error", "the process died")
            if msg[0] == "done":
                results[name] = msg[1]
                alive.remove(name)
            elif msg[0] == "error":
                tail = (logs / f"{label}-{name}.log").read_text()[-3000:]
                sys.stderr.write(f"{name} failed: {msg[1]}\n{tail}\n")
                alive.remove(name)
    for p, _ in procs.values():
        p.join(timeout=30)
    return {name: summarize(r) for name, r in results.items()}


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    counted = r["steps"][1:]  # the first step warms up
    tokens = sum(n for n, _ in counted)
    seconds = sum(s for _, s in counted)
    return {
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "first_step_s": r["steps"][0][1] if r["steps"] else 0.0,  # with loading, tokenizing, model setup
        "step_s": statistics.median(s for _, s in counted) if counted else 0.0,
        "trained_tokens": sum(n for n, _ in r["steps"]),
        "val_loss": r["val_loss"],
        **{k: v for k, v in r.items() if k.startswith("peak_")},
        "steps": [[n, round(s, 4)] for n, s in r["steps"]],  # per step: trained tokens, seconds
    }


def table(title: str, results: dict[str, dict[str, Any]], base: str | None = PLAIN) -> str:
    ref = results.get(base) if base else None
    lines = [f"\n## {title}", "", "| runner | trained tok/s | x plain | step s | peak RSS MB | x plain | val loss |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        speed = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}" if ref else "-"
        mem = f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}" if ref else "-"
        gpu = f" (GPU {r['peak_gpu_mb']:.0f})" if "peak_gpu_mb" in r else ""
        lines.append(
            f"| {name} | {r['tokens_per_s']:.0f} | {speed} | {r['step_s']:.2f} | {r['peak_rss_mb']:.0f}{gpu} | "
            f"{mem} | {r['val_loss']:.4f} |"
        )
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    plain, ours = results[PLAIN], results["lmtune"]
    best = max((r for n, r in results.items() if n not in (PLAIN, "lmtune")), key=lambda r: r["tokens_per_s"])
    memory_key = "peak_gpu_mb" if "peak_gpu_mb" in ours else "peak_rss_mb"
    return {
        "speedup": ours["tokens_per_s"] / plain["tokens_per_s"],
        "speedup_vs_best_baseline": ours["tokens_per_s"] / best["tokens_per_s"],
        "memory_ratio": ours[memory_key] / plain[memory_key],
        "loss_delta": (ours["val_loss"] - plain["val_loss"]) / plain["val_loss"],
    }


def base_spec(assets: Assets, args: argparse.Namespace, max_length: int = 512, epoch: bool = True) -> Spec:
    """Every runner trains one epoch of `steps` batches over the same first steps x batch_size examples: a
    length-grouped sampler (HF's sorts each 50-batch window longest first) would otherwise see longer, cheaper-
    per-token batches in a short window than a shuffled one, and the runs would not learn from the same data."""
    if epoch:
        assets = first(assets, args.steps * args.batch_size)
    return Spec(
        runner="lmtune",
        tokenizer=str(assets.tokenizer),
        model=str(model_dir(args.model)),
        train=str(assets.train),
        validation=str(assets.validation),
        max_length=max_length,
        steps=args.steps,
        batch_size=args.batch_size,
        overrides=tuple(args.set),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run (the first is not counted)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--examples", type=int, default=2000, help="size of the variable-length set")
    ap.add_argument("--model", default="33m", choices=["33m", "500m"], help="500m: the GPU check")
    ap.add_argument("--set", action="append", default=[], help="an lmtune config override, e.g. train.batching=random")
    ap.add_argument("--no-code-alpaca", action="store_true", help="only the variable-length set")
    ap.add_argument("--levers", action="store_true", help="lmtune with each lever off in turn, beside all-on")
    ap.add_argument("--scaling", action="store_true", help="tokens/s and memory at 256..2048 tokens, 1x/4x data")
    ap.add_argument(
        "--scaling-cases",
        default="256,512,1024,2048,1x,4x",
        help="which scaling cases: max lengths and data multiples (the 2048 one needs ~25 GB with both runners)",
    )
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    ap.add_argument("--only", default="", help="comma-separated runners to race (quick comparisons)")
    ap.add_argument("--no-main", action="store_true", help="skip the main comparison (with --levers/--scaling)")
    args = ap.parse_args(argv)

    report: dict[str, Any] = {}
    varlen = variable_length_set(args.examples)
    pick = [n for n in args.only.split(",") if n]
    if pick:
        specs = {n: s for n, s in contenders(base_spec(varlen, args)).items() if n in pick}
        print(table("selected runners (variable-length set)", race(specs, "only"), pick[0]))
        return 0
    if not args.no_main:
        results = race(contenders(base_spec(varlen, args)), "varlen")
        title = f"{args.examples} SFT examples of 20-400 tokens ({args.steps} steps, batch {args.batch_size})"
        print(table(title, results), flush=True)
        report["varlen"] = {"runs": results, **ratios(results)}
    alpaca = None if args.no_code_alpaca or args.no_main else code_alpaca_set()
    if alpaca is not None:
        results = race(contenders(base_spec(alpaca, args)), "alpaca")
        print(table(f"Code Alpaca ({args.steps} steps, batch {args.batch_size})", results), flush=True)
        report["code_alpaca"] = {"runs": results, **ratios(results)}
    if args.levers:
        base = base_spec(varlen, args)
        specs = {"lmtune (all levers)": base}
        specs.update({f"without {k}": replace(base, overrides=base.overrides + v) for k, v in LEVERS.items()})
        specs.update({k: replace(base, overrides=base.overrides + v) for k, v in EXTRAS.items()})
        results = race(specs, "levers")
        print(table("lmtune levers, each switched off in turn (variable-length set)", results, "lmtune (all levers)"))
        sys.stdout.flush()
        report["levers"] = results
    if args.scaling:
        report["scaling"] = scaling(args)
    for name in ("varlen", "code_alpaca"):
        if name in report:
            r = report[name]
            print(
                f"\n{name}: speedup {r['speedup']:.2f}x, vs the best baseline {r['speedup_vs_best_baseline']:.2f}x, "
                f"memory {r['memory_ratio']:.2f}x, validation loss {100 * r['loss_delta']:+.2f}%"
            )
    if args.json and "varlen" in report:
        v = report["varlen"]
        head = {k: v[k] for k in ("speedup", "speedup_vs_best_baseline", "memory_ratio", "loss_delta")}
        print(json.dumps({**head, **report}))
    return 0


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """lmtune beside the plain baseline as the examples get longer (one epoch of a few steps over examples of
    20..max_length tokens) and as the data grows (the same number of steps drawn from 1x and 4x the examples:
    tokens/s should hold, and the first step shows what loading and tokenizing the data cost)."""
    steps = max(6, args.steps // 3)
    small = argparse.Namespace(**{**vars(args), "steps": steps})
    out: dict[str, Any] = {}
    rows = [
        "| data | max length | plain tok/s | lmtune tok/s | x | plain RSS MB | lmtune RSS MB | x | lmtune 1st step s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cases = [(args.examples, n, True) for n in (256, 512, 1024, 2048) if str(n) in args.scaling_cases]
    cases += [(k * args.examples, 512, False) for k in (1, 4) if f"{k}x" in args.scaling_cases]
    for examples, length, epoch in cases:
        assets = variable_length_set(examples, hi=length)
        spec = base_spec(assets, small, max_length=length, epoch=epoch)
        label = f"scale-{examples}-{length}-{'epoch' if epoch else 'window'}"
        res = race({PLAIN: replace(spec, runner="hf"), "lmtune": spec}, label)
        out[label] = res
        what = f"{steps * args.batch_size} of 20-{length} tok" if epoch else f"{examples} ex, {steps} steps"
        if len(res) < 2:  # a runner died, e.g. killed for memory: both runners are resident at once
            got = ", ".join(f"{n} {r['tokens_per_s']:.0f} tok/s, {r['peak_rss_mb']:.0f} MB" for n, r in res.items())
            rows.append(f"| {what} | {length} | failed: only {got or 'none'} finished (see the logs) |")
            print(rows[-1], flush=True)
            continue
        p, o = res[PLAIN], res["lmtune"]
        rows.append(
            f"| {what} | {length} | {p['tokens_per_s']:.0f} | {o['tokens_per_s']:.0f} | "
            f"{o['tokens_per_s'] / p['tokens_per_s']:.2f} | {p['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} | "
            f"{o['peak_rss_mb'] / p['peak_rss_mb']:.2f} | {o['first_step_s']:.1f} |"
        )
        print(rows[-1], flush=True)
    print(f"\n## Scaling ({steps} steps each)\n\n" + "\n".join(rows), flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
