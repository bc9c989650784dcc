"""`list_runs` and `compare_runs` (the CLI's `lmtune runs [DIR]` and `lmtune runs compare RUN RUN ...`): a table of
the run directories under a folder, and one HTML page that sets runs side by side.

Both read run directories leniently through lmtune.report.run (a crashed, pruned or older run still shows), and a
run's status comes from its files: summary.json (finished, or diverged: failed), trial.json (a `lmtune tune` trial:
pruned or failed), the directory's lock held by another process (running), otherwise interrupted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.fileio import atomic_write_text
from lmtune.html import cards, image, page, table
from lmtune.report.run import Run, read_run

SKIP = {"final", "checkpoints", "base_model", "folds", ".git", "node_modules", "__pycache__"}
HIGHER_IS_BETTER = {"accuracy", "f1", "margin"}
HYPERPARAMETERS = ("train.lr", "train.epochs", "train.max_steps", "train.batch_size", "train.weight_decay", "method.r")


@dataclass
class RunRow:
    """One run directory, as the table shows it."""

    name: str
    path: str
    task: str | None
    model: str | None
    method: str | None
    status: str  # finished, failed, pruned, interrupted, running
    steps: int | None
    time_s: float | None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    best_validation: dict[str, float] = field(default_factory=dict)  # metric -> its best value over the evaluations
    eval: dict[str, float] = field(default_factory=dict)  # eval.json: the tuned model's metrics

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def value(self, key: str) -> Any:
        """A column by name, for sorting: a field, a hyperparameter, `val_<metric>` or `eval_<metric>`."""
        if key.startswith("val_"):
            return self.best_validation.get(key[4:])
        if key.startswith("eval_"):
            return self.eval.get(key[5:])
        if key in self.hyperparameters:
            return self.hyperparameters[key]
        return getattr(self, key, None)


def find_runs(root: str | Path) -> list[Path]:
    """The run directories under root (root itself when it is one), in path order; their insides are not searched."""
    base = Path(root)
    if not base.is_dir():
        raise LmtuneError(f"{base} is not a directory", hint="pass the folder holding run directories, e.g. runs")
    found = []
    for here, dirs, files in os.walk(base):
        if "config.yaml" in files or "metrics.jsonl" in files:
            found.append(Path(here))
            dirs[:] = [d for d in dirs if d == "trials" or d.startswith("fold-")]  # a study's trials, CV folds
            continue
        dirs[:] = sorted(d for d in dirs if d not in SKIP and not d.startswith("."))
    return sorted(found)


def list_runs(root: str | Path = "runs", *, sort: str | None = None, descending: bool = False) -> list[RunRow]:
    """A row for every run directory under `root`; `sort` names a column (name, steps, time_s, status, a
    hyperparameter such as train.lr, val_loss, val_accuracy, eval_rougeL, ...), runs lacking it last."""
    rows = [row_of(read_run(path)) for path in find_runs(root)]
    if sort:
        have = [r for r in rows if r.value(sort) is not None]
        rest = [r for r in rows if r.value(sort) is None]
        try:
            have.sort(key=lambda r: r.value(sort), reverse=descending)
        except TypeError:
            have.sort(key=lambda r: str(r.value(sort)), reverse=descending)
        rows = have + rest
    return rows


def row_of(run: Run) -> RunRow:
    cfg, summary = run.config, run.summary
    train = [m for m in run.metrics if m.get("split") == "train"]
    steps = summary.get("steps") or (train[-1].get("step") if train else None)
    time_s = summary.get("train_time_s") or (train[-1].get("time") if train else None)
    return RunRow(
        name=run.name,
        path=str(run.path),
        task=cfg.get("task"),
        model=run.model,
        method=run.method.get("name") if isinstance(run.method, dict) else str(run.method),
        status=status_of(run),
        steps=steps,
        time_s=time_s,
        hyperparameters={k: v for k in HYPERPARAMETERS if (v := _at(cfg, k)) is not None},
        best_validation=best_validation(run.metrics),
        eval={k: v for k, v in ((run.eval.get("metrics") or {}).get("tuned") or {}).items() if _number(v)},
    )


def status_of(run: Run) -> str:
    trial = _read_trial(run.path)
    if trial.get("state") in ("pruned", "failed"):
        return str(trial["state"])
    if run.summary:
        return "failed" if run.summary.get("diverged") else "finished"
    if _held(run.path):
        return "running"
    return "interrupted"


def best_validation(metrics: Sequence[dict[str, Any]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for record in metrics:
        if record.get("split") != "validation" or not record.get("step"):
            continue  # step 0 is the model before training
        for key, value in record.items():
            if key in ("split", "step", "tokens") or not _number(value):
                continue
            pick = max if key in HIGHER_IS_BETTER else min
            best[key] = pick(best[key], value) if key in best else value
    return best


def compare_runs(runs: Sequence[str | Path], output: str | Path | None = None) -> Path:
    """One self-contained HTML page: the runs' training and validation curves overlaid, the config keys where
    they differ, and their eval tables side by side. Written to `output` (default compare.html beside the first
    run). Returns its path."""
    from lmtune.plots import overlaid_curves

    if len(runs) < 2:
        raise LmtuneError("compare needs at least two run directories", hint="lmtune runs compare RUN RUN ...")
    read = [read_run(r) for r in runs]
    labels = _labels(read)
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {"train loss": {}}
    for label, run in zip(labels, read, strict=True):
        panels["train loss"][label] = _points(run.metrics, "train", "loss")
        names = {k for m in run.metrics if m.get("split") == "validation" for k, v in m.items() if _number(v)}
        for key in sorted(names - {"step", "tokens", "epoch"}):
            panels.setdefault(f"validation {key}", {})[label] = _points(run.metrics, "validation", key)
    rows = [row_of(run) for run in read]
    body = [
        f"<h1>{len(read)} runs compared</h1>",
        cards((label, row.status) for label, row in zip(labels, rows, strict=True)),
        "<h2>Curves</h2>",
        image(overlaid_curves(panels), "training and validation curves"),
        "<h2>Runs</h2>",
        table(["", *labels], _summary_rows(rows)),
        "<h2>Config differences</h2>",
        _config_diff(labels, read),
        "<h2>Evaluation</h2>",
        _eval_table(labels, rows),
    ]
    out = Path(output) if output is not None else read[0].path.parent / "compare.html"
    atomic_write_text(out, page("lmtune: runs compared", body))
    return out


def _summary_rows(rows: Sequence[RunRow]) -> list[list[Any]]:
    keys = sorted({k for r in rows for k in r.best_validation})
    out = [["path", *(r.path for r in rows)], ["task", *(r.task for r in rows)], ["model", *(r.model for r in rows)],
           ["method", *(r.method for r in rows)], ["steps", *(r.steps for r in rows)],
           ["time (s)", *(_fmt(r.time_s) for r in rows)]]  # fmt: skip
    out += [[f"best validation {k}", *(_fmt(r.best_validation.get(k)) for r in rows)] for k in keys]
    return out


def _config_diff(labels: Sequence[str], runs: Sequence[Run]) -> str:
    flat = [_flatten(run.config) for run in runs]
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1 and k not in ("name", "output_dir")]
    if not differ:
        return '<p class="muted">the configs are the same (apart from name and directory)</p>'
    return table(["key", *labels], [[k, *(_fmt(f.get(k)) for f in flat)] for k in differ])


def _eval_table(labels: Sequence[str], rows: Sequence[RunRow]) -> str:
    keys = sorted({k for r in rows for k in r.eval})
    if not keys:
        return '<p class="muted">no run has an eval.json (lmtune eval RUN writes one)</p>'
    return table(["metric", *labels], [[k, *(_fmt(r.eval.get(k)) for r in rows)] for k in keys])


def _labels(runs: Sequence[Run]) -> list[str]:
    """Names that tell the runs apart: the run name, or its directory when names repeat."""
    names = [run.name for run in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{run.path.parent.name}/{run.path.name}" for run in runs]


def _points(metrics: Sequence[dict[str, Any]], split: str, key: str) -> list[tuple[float, float]]:
    return [(m["step"], m[key]) for m in metrics if m.get("split") == split and _number(m.get(key)) and "step" in m]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _at(cfg: dict[str, Any], path: str) -> Any:
    node: Any = cfg
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _read_trial(path: Path) -> dict[str, Any]:
    import json

    try:
        value = json.loads((path / "trial.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _held(path: Path) -> bool:
    """Another process trains there: it holds the run directory's flock (lmtune.rundir.lock_run_dir)."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)
