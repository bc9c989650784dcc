"""`lmtune tune`: a thin wrapper over `lmtune.api.search.tune` (hyperparameter search on Optuna)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmtune.cli.app import SetOpt, _fmt, _quiet_libraries, app, emit_json, out, say


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="YAML config file with a `tune:` section.")],
    set_: SetOpt = None,
    study_dir: Annotated[
        str | None, typer.Option("--study-dir", "-o", help="Study directory (default runs/<name>-tune).")
    ] = None,
    trials: Annotated[int | None, typer.Option(help="Trials in the study (tune.n_trials).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after S seconds (tune.timeout).")] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, random or grid (tune.sampler).")] = None,
    pruner: Annotated[str | None, typer.Option(help="median, hyperband or none (tune.pruner).")] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna RDB URL (postgresql://…, sqlite:///…) that workers on several machines share."),
    ] = None,
    study_name: Annotated[
        str | None, typer.Option(help="Study name in the storage (default: the config's name).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the study in the study directory (finished trials kept).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the study directory's study.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Search hyperparameters with Optuna: each trial a run under the study directory; writes best.yaml,
    trials.csv and study.html."""
    sets = list(set_ or [])
    for key, value in (("n_trials", trials), ("timeout", timeout), ("sampler", sampler), ("pruner", pruner)):
        if value is not None:
            sets.append(f"tune.{key}={value}")
    _quiet_libraries()
    os.environ.setdefault("TQDM_DISABLE", "1")  # a progress bar per trial drowns the study's own lines
    from lmtune.api.search import tune as run_tune

    result = run_tune(config, overrides=sets, study_dir=study_dir, storage=storage, study_name=study_name,
                      resume=resume, overwrite=overwrite, report=say)  # fmt: skip
    if json_:
        emit_json({"study_dir": str(result.study_dir), "study": result.study_name, "storage": result.storage,
                   "metric": result.metric, "direction": result.direction, "best": result.best,
                   "start": result.start, "trials": result.trials, "files": result.files})  # fmt: skip
        return
    names = sorted({k for t in result.trials for k in t["params"]})
    table = Table("#", "state", result.metric, *names, "steps", title=f"study {result.study_name}")
    for t in result.trials:
        mark = " *" if result.best is not None and t["number"] == result.best["number"] else ""
        table.add_row(str(t["number"]) + mark, t["state"], _fmt(t["value"]) if t["value"] is not None else "",
                      *(_fmt(t["params"].get(n)) for n in names), str(t["steps"] or ""))  # fmt: skip
    out.print(table)
    if result.best is not None:
        start = result.start
        vs = f" (the config's own values: {start['value']:.4f})" if start and start["value"] is not None else ""
        out.print(f"best trial {result.best['number']}: {result.metric} {result.best['value']:.4f}{vs}")
    for name, path in result.files.items():
        out.print(f"{name}: {path}")
