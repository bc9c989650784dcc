"""The `lmtune` command: parse arguments, call the Python API, print. No logic of its own.

The shared app, consoles and helpers live here; the commands in `train` (train, generate, estimate, config),
`data` (data ...), `evaluate` (eval, report) and `ship` (export, chat, serve), registered on import at the bottom.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Annotated

import typer
from rich.console import Console

from lmtune.errors import LmtuneError
from lmtune.fileio import json_safe
from lmtune.rundir import release_all

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


def main() -> None:
    try:
        app()
    except LmtuneError as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)  # 2: fix the input; 3: the environment or the run itself (disk, lock, divergence)
    except KeyboardInterrupt:
        err.print("aborted (Ctrl-C); a training run continues from its last checkpoint with --resume")
        sys.exit(130)
    finally:
        release_all()  # a run refused before it wrote anything leaves no directory behind


if __name__ == "__main__":
    main()


# Registered last (the command modules import the app and helpers above), in the order `--help` lists them.
# isort: off
from lmtune.cli import train  # noqa: E402, F401
from lmtune.cli import data  # noqa: E402, F401
from lmtune.cli import evaluate  # noqa: E402, F401
from lmtune.cli import ship  # noqa: E402, F401

# isort: on
