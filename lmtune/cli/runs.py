"""`lmtune runs [DIR]` and `lmtune runs compare RUN RUN ...`: thin wrappers over lmtune.api.leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmtune.cli.app import _fmt, app, emit_json, out


@app.command()
def runs(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="DIR (default runs), or `compare RUN RUN ...` for one page comparing runs."),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            help="Sort by a column: name, status, steps, time_s, train.lr, val_loss, val_accuracy, eval_<metric>."
        ),
    ] = None,
    desc: Annotated[bool, typer.Option("--desc", help="Sort in descending order.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="compare: the HTML file to write.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the table as one JSON object.")] = False,
) -> None:
    """A table of the run directories under DIR (status, key hyperparameters, best validation, eval metrics);
    `lmtune runs compare RUN RUN ...` writes one HTML page with their curves, config diff and eval tables."""
    from lmtune.api.leaderboard import compare_runs, list_runs

    args = list(paths or [])
    if args[:1] == ["compare"]:
        page = compare_runs(args[1:], output)
        if json_:
            emit_json({"compare": str(page)})
        else:
            out.print(f"comparison: {page}")
        return
    if len(args) > 1:
        raise typer.BadParameter("give one DIR, or `compare RUN RUN ...`")
    rows = list_runs(args[0] if args else "runs", sort=sort, descending=desc)
    if json_:
        emit_json({"runs": [r.as_dict() for r in rows]})
        return
    hyper = sorted({k for r in rows for k in r.hyperparameters})
    metrics = sorted({k for r in rows for k in r.best_validation} - {"perplexity"})
    evals = sorted({k for r in rows for k in r.eval})
    table = Table("run", "status", "task", "model", "method", *hyper, "steps", "time (s)",
                  *(f"best val {m}" for m in metrics), *(f"eval {m}" for m in evals), title=f"{len(rows)} runs")  # fmt: skip
    for r in rows:
        table.add_row(r.name, r.status, r.task or "", r.model or "", r.method or "",
                      *(_cell(r.hyperparameters.get(k)) for k in hyper), _cell(r.steps), _cell(r.time_s),
                      *(_cell(r.best_validation.get(m)) for m in metrics), *(_cell(r.eval.get(m)) for m in evals))  # fmt: skip
    out.print(table)


def _cell(v: object) -> str:
    return "" if v is None else _fmt(v)
