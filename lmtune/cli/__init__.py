"""The `lmtune` command: parse arguments, call the Python API, print. No logic of its own.

`app` holds the shared typer app, consoles and helpers; the commands live in `train` (train, generate, estimate,
config), `data` (data ...), `evaluate` (eval, report) and `ship` (export, chat, serve, server), registered on import here in
the order `--help` lists them.
"""

from __future__ import annotations

import sys

# The command modules register their commands on the app as they are imported, in the order `--help` lists them.
# isort: off
from lmtune.cli import train  # noqa: F401
from lmtune.cli import data  # noqa: F401
from lmtune.cli import evaluate  # noqa: F401
from lmtune.cli import ship  # noqa: F401
from lmtune.cli import tune  # noqa: F401
from lmtune.cli import runs  # noqa: F401

# isort: on
from lmtune.cli.app import app, err
from lmtune.errors import LmtuneError
from lmtune.rundir import release_all


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
