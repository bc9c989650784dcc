"""`lmtune train`, `generate`, `estimate` and `config`: thin wrappers over the Python API."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lmtune.cli.app import SetOpt, _fmt, _quiet_libraries, app, config_app, emit_json, err, out, say
from lmtune.errors import LmtuneError


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOpt = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", "-o", help="Run directory.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    cv: Annotated[
        int | None,
        typer.Option(help="K-fold cross-validation (stratified by `label` when present): mean ± std per metric."),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(help="Train on N processes (DDP through torchrun; gloo on CPU, NCCL on GPUs)."),
    ] = None,
) -> None:
    """Fine-tune as CONFIG says; writes runs/<name>/ (config, data fingerprints, metrics, checkpoints, model)."""
    # The config first: a mistake in it is reported in a moment, before torch and transformers load (seconds).
    from lmtune.config import load_config

    cfg = load_config(config, set_ or [], output_dir)
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        from lmtune.train.launch import relaunch

        raise typer.Exit(relaunch(sys.argv[1:], nproc))
    _quiet_libraries()
    from lmtune.api import finetune
    from lmtune.errors import Interrupted

    if cv is not None:
        _cross_validate(config, set_ or [], output_dir, overwrite, cv, resume)
        return

    try:
        result = finetune(cfg, resume=resume, overwrite=overwrite, report=say)
    except Interrupted as e:
        # Ctrl-C: the loop finished the step and saved its checkpoint; say how to continue, without a traceback.
        err.print(
            f"interrupted: stopped after step {e.step} and saved its checkpoint; continue the run by repeating "
            "this command with --resume",
            highlight=False,
        )
        raise typer.Exit(130) from None
    finally:
        from lmtune.train.launch import end_process_group  # torch is loaded by now

        end_process_group()
    s = result.summary
    if not s:
        return
    table = Table(title=f"run {result.run_dir}", show_header=False)
    for key in ("steps", "trained_tokens", "train_time_s", "tokens_per_s", "first_train_loss", "last_train_loss"):
        table.add_row(key, _fmt(s.get(key)))
    out.print(table)
    if s.get("val_loss_before") is not None:
        out.print(
            f"held-out loss before training: {s['val_loss_before']:.4f}   after: {s['val_loss_after']:.4f}   "
            f"(best {s['best_val_loss']:.4f} at step {s['best_val_step']})"
        )
        if s.get("val_accuracy_before") is not None:
            out.print(
                f"held-out accuracy before: {s['val_accuracy_before']:.4f}   after: {s['val_accuracy_final']:.4f}"
            )
        elif s.get("val_perplexity_before") is not None:
            out.print(
                f"held-out perplexity before: {s['val_perplexity_before']:.2f}   after: {s['val_perplexity_after']:.2f}"
            )
        chosen = s.get("final_weights") or {}
        metric = chosen.get("metric")
        if metric not in (None, "loss", "accuracy", "perplexity") and s.get(f"val_{metric}_before") is not None:
            out.print(
                f"held-out {metric} before: {s[f'val_{metric}_before']:.4f}   after: {s[f'val_{metric}_final']:.4f}"
            )
        if chosen.get("last_weights"):
            out.print(f"final/ holds step {chosen['step']} of {chosen['last_step']}: {chosen['why']}")
    out.print(f"run directory: {result.run_dir}")


def _cross_validate(
    config: Path, overrides: list[str], output_dir: str | None, overwrite: bool, k: int, resume: bool
) -> None:
    from lmtune.api import cross_validate

    if resume:
        raise LmtuneError("--resume does not apply to --cv", hint="rerun the cross-validation with --overwrite")
    result = cross_validate(config, k=k, overrides=overrides, output_dir=output_dir, overwrite=overwrite, report=say)
    table = Table("metric", "mean", "std", *(f"fold {f['fold']}" for f in result.folds),
                  title=f"{k}-fold cross-validation{' (stratified)' if result.stratified else ''}")  # fmt: skip
    for name, mean in result.mean.items():
        folds = [_fmt(f.get(name)) for f in result.folds]
        table.add_row(name, f"{mean:.4f}", f"{result.std[name]:.4f}", *folds)
    out.print(table)
    out.print(f"run directory: {result.run_dir} (cv.json, one run per fold)")


@app.command()
def generate(
    run: Annotated[Path, typer.Argument(help="Run directory (runs/<name>).")],
    prompt: Annotated[str | None, typer.Option(help="Prompt text (a user turn for chat runs).")] = None,
    messages: Annotated[Path | None, typer.Option(help="JSON file with a list of chat messages.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy decoding.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (when temperature > 0).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Generate with the tuned model of a run, rendering the prompt as in training."""
    _quiet_libraries()
    from lmtune.api.run_jobs import generate as run_generate
    from lmtune.api.run_jobs import read_messages

    msgs = read_messages(messages) if messages is not None else ()
    text = run_generate(
        run,
        prompt=prompt,
        messages=msgs,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    out.print(text, markup=False, highlight=False)


@app.command()
def estimate(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    probe_steps: Annotated[
        int, typer.Option("--probe-steps", help="Also run the run's first N optimizer steps and measure (0: don't).")
    ] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    set_: SetOpt = None,
) -> None:
    """Parameters, peak memory and time of the run CONFIG describes, before spending compute (nothing is written)."""
    _quiet_libraries()
    from lmtune.api import estimate as run_estimate

    result = run_estimate(config, overrides=set_ or [], probe_steps=probe_steps, report=say)
    if json_:
        emit_json(result.as_dict())
        return
    _print_estimate(result)


def _print_estimate(r: Any) -> None:
    mib = lambda n: f"{n / 2**20:,.1f} MiB"  # noqa: E731
    out.print(
        f"[bold]{r.config}[/bold]: {r.model} · {r.method} · {r.device} · {r.precision}\n"
        f"parameters: {r.total_params:,} total, {r.trainable_params:,} trainable ({r.trainable_percent:.2f}%)"
        + (f", of which LoRA adds {r.lora_params:,}" if r.lora_params else ""),
        highlight=False,
    )
    p, m = r.probe, r.memory
    table = Table("memory", f"run's heaviest step ({m.rows}×{m.width})", title="peak memory of a training step")
    if p:
        table.add_column(f"probed steps 1-{p.memory_steps} ({p.estimate.rows}×{p.estimate.width})")
    terms = [
        ("weights", "weights"),
        ("gradients", "gradients"),
        ("optimizer states (AdamW)", "optimizer_states"),
        ("activations saved for backward", "activations"),
        ("logits and loss", "logits"),
        ("autocast weight copies", "autocast_copies"),
        ("optimizer temporaries", "optimizer_temporaries"),
    ]
    for label, key in terms:
        table.add_row(label, mib(getattr(m, key)), *([mib(getattr(p.estimate, key))] if p else []))
    at = {"forward": "end of forward", "backward": "in backward", "optimizer": "optimizer step"}[m.phase]
    table.add_row("[bold]peak estimate[/bold]", f"{mib(m.peak)} ({at})", *([mib(p.estimate.peak)] if p else []))
    if p:
        table.add_row("measured peak", "", f"{mib(p.peak)}")
        table.add_row("estimate / measured", "", f"{p.ratio:.2f}")
        if p.rss_peak is not None:
            table.add_row("peak RSS above the pre-model baseline", "", mib(p.rss_peak))
    out.print(table)
    if p:
        out.print(f"measured: {p.measures}", highlight=False)
    out.print(
        f"run: {r.steps:,} steps of {r.grad_accum} × {r.micro_batch_size} rows, {r.tokens:,} padded tokens "
        f"({r.trained_tokens:,} trained)\n"
        f"time (analytic, rough): {r.time_s:,.1f} s = {r.flops:.3g} FLOPs / {r.throughput_flops / 1e9:.1f} GFLOP/s",
        highlight=False,
    )
    if p:
        out.print(
            f"time (probe): median step {p.median_step_s * 1000:,.0f} ms → forecast {p.forecast_s:,.1f} s "
            f"of training for {r.steps:,} steps (evaluation and checkpoints not included)",
            highlight=False,
        )
    for note in r.notes:
        out.print(f"note: {note}", style="dim", highlight=False)


@config_app.command("docs")
def config_docs() -> None:
    """Every config key with its default and meaning."""
    from lmtune.config import iter_field_docs

    table = Table("key", "default", "meaning")
    for key, default, doc in iter_field_docs():
        table.add_row(key, default, doc)
    out.print(table)


@config_app.command("show")
def config_show(config: Annotated[Path, typer.Argument(help="YAML config file.")], set_: SetOpt = None) -> None:
    """The config after defaults and overrides, as the run will save it."""
    from lmtune.config import dump_config, load_config

    out.print(dump_config(load_config(config, set_ or [])), markup=False, highlight=False)
