"""What the command modules share: the typer app and its sub-apps, the consoles, the reporter the Python API
receives, and the printing helpers."""

from __future__ import annotations

import json
import os
import warnings
from typing import Annotated

import typer
from rich.console import Console

from lmtune.fileio import json_safe

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


def _quiet_libraries(*, forks: bool = True) -> None:
    """Silence the libraries' progress bars and notices. ``forks=False`` for a command that starts no process:
    tokenizers may then encode a batch on every core (off otherwise, as it warns in every forked child)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false" if forks else "true")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # peft still calls transformers' deprecated gradient-checkpointing helpers; nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def say(text: str, *, warning: bool = False) -> None:
    """The reporter the CLI hands the Python API: its messages on stderr, warnings in yellow. Only the CLI prints."""
    from rich.markup import escape

    if warning:
        err.print(f"[yellow]warning: {escape(text)}[/yellow]", highlight=False)
    else:
        err.print(escape(text), highlight=False)


def emit_json(obj: object) -> None:
    """`--json`: exactly one JSON object on stdout (progress and messages go to stderr)."""
    print(json.dumps(json_safe(obj), ensure_ascii=False, default=str, allow_nan=False), flush=True)


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
