"""The `lmtune` command: parse arguments, call the Python API, print. No logic of its own."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lmtune.errors import LmtuneError

app = typer.Typer(
    help="Fine-tune language models on your own data, with the evidence that it worked.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect training data before spending compute.", no_args_is_help=True)
config_app = typer.Typer(help="Config reference and resolution.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: --set train.lr=1e-4")]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # peft still calls transformers' deprecated gradient-checkpointing helpers; nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOpt = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", "-o", help="Run directory.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
) -> None:
    """Fine-tune as CONFIG says; writes runs/<name>/ (config, data fingerprints, metrics, checkpoints, model)."""
    _quiet_libraries()
    from lmtune.api import finetune
    from lmtune.loop import Interrupted

    try:
        result = finetune(
            config, overrides=set_ or [], output_dir=output_dir, resume=resume, overwrite=overwrite, console=err
        )
    except Interrupted as e:
        # Ctrl-C: the loop finished the step and saved its checkpoint; say how to continue, without a traceback.
        err.print(
            f"interrupted: stopped after step {e.step} and saved its checkpoint; continue the run by repeating "
            "this command with --resume",
            highlight=False,
        )
        raise typer.Exit(130) from None
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
    out.print(f"run directory: {result.run_dir}")


def emit_json(obj: object) -> None:
    """`--json`: exactly one JSON object on stdout (progress and messages go to stderr)."""
    print(json.dumps(obj, ensure_ascii=False, default=str), flush=True)


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


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
    from lmtune.evaluate.generate import generate as run_generate
    from lmtune.evaluate.generate import read_messages

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


@data_app.command("preview")
def data_preview(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    n: Annotated[int, typer.Option("-n", help="How many examples to show.")] = 3,
    split: Annotated[str, typer.Option(help="train or validation.")] = "train",
    set_: SetOpt = None,
) -> None:
    """Show rendered examples with the trained tokens marked ⟦like this⟧ (and highlighted)."""
    _quiet_libraries()
    from lmtune.api import preview

    for item in preview(config, overrides=set_ or [], n=n, split=split):
        out.rule(f"{item.source}:{item.line}  ·  {item.tokens} tokens, {item.trained} trained")
        for text, trained in item.segments:
            if trained:
                out.print(f"⟦{text}⟧", style="bold green", end="", markup=False, highlight=False)
            else:
                out.print(text, style="dim", end="", markup=False, highlight=False)
        out.print()
    out.print("⟦…⟧ = tokens the loss is computed on; the rest is context.", style="italic")


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


def main() -> None:
    try:
        app()
    except LmtuneError as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("aborted (Ctrl-C); a training run continues from its last checkpoint with --resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
