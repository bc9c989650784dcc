"""Experiment tracking (`train.report_to`): the run's figures sent to TensorBoard, MLflow, W&B or Trackio through
accelerate's trackers (accelerate.tracking), which own each library's client. metrics.jsonl stays the record;
trackers get a copy: train/* per logged step, validation/* per evaluation, the flattened resolved config as
hyperparameters, and at the end the run's report, summary and eval table (as artifacts where the library keeps
files: MLflow and W&B; as text in TensorBoard; as final values in Trackio).

What lmtune adds over accelerate's `init_trackers`: the trackers' places per run (a run directory, a study's group),
artifacts, and closing trackers that a run ending in an exception (a pruned `lmtune tune` trial) left open before
the next run of the same process opens its own (MLflow allows one active run per process).
"""

from __future__ import annotations

import atexit
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmtune.errors import EnvironmentFault

_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}
_OPEN: list[Trackers] = []


class Trackers:
    """The run's trackers (none when train.report_to is empty or on a process other than the main one)."""

    def __init__(self, trackers: Sequence[Any] = ()) -> None:
        self.trackers = list(trackers)

    def log(self, record: dict[str, Any], prefix: str, step: int) -> None:
        values = {f"{prefix}/{k}": float(v) for k, v in record.items() if _number(v) and k not in ("step", "split")}
        for tracker in self.trackers:
            if values:
                tracker.log(values, step=step)

    def finish(self, run_dir: Path) -> None:
        """The report, summary and eval table as artifacts, then close."""
        for tracker in self.trackers:
            _artifacts(tracker, run_dir)
        self.close()

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
        if self in _OPEN:
            _OPEN.remove(self)


def start_trackers(names: Sequence[str], run_name: str, group: str | None, run_dir: Path, config: dict[str, Any],
                   main: bool) -> Trackers:  # fmt: skip
    """Open the named trackers for a run and give them its config; closes those a failed run left open."""
    for left in list(_OPEN):
        left.close()
    if not names or not main:
        return Trackers()
    missing = [n for n in names if not _installed(_MODULES[n])]
    if missing:
        raise EnvironmentFault(
            f"train.report_to: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed",
            hint="pip install 'lmtune[track]' (tensorboard, mlflow, wandb), or pip install " + " ".join(missing),
        )
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

    group = group or run_name
    made = []
    for name in names:
        if name == "tensorboard":
            tracker = TensorBoardTracker(run_name, str(run_dir / "tensorboard"))
        elif name == "mlflow":
            tracker = MLflowTracker(experiment_name=group, run_name=run_name)
        elif name == "wandb":
            project = os.environ.get("WANDB_PROJECT", "lmtune")
            tracker = WandBTracker(project, name=run_name, group=group, dir=str(run_dir))
        else:
            tracker = TrackioTracker(group, name=run_name)
        tracker.start()
        tracker.store_init_configuration(flat_config(config))
        made.append(tracker)
    trackers = Trackers(made)
    if not _OPEN:
        atexit.register(lambda: [t.close() for t in list(_OPEN)])
    _OPEN.append(trackers)
    return trackers


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys to scalars (what every tracker's hyperparameters accept); lists and None as text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = json.dumps(value)
    return out


def _artifacts(tracker: Any, run_dir: Path) -> None:
    files = [
        run_dir / n for n in ("report.html", "summary.json", "eval.json", "config.yaml") if (run_dir / n).is_file()
    ]
    scores = _eval_scores(run_dir)
    if tracker.name == "mlflow":
        import mlflow

        for path in files:
            mlflow.log_artifact(str(path))
        if scores:
            mlflow.log_metrics({f"eval/{k}": v for k, v in scores.items()})
    elif tracker.name == "wandb":
        import wandb

        for path in files:
            if path.name != "config.yaml":  # W&B keeps the run's config (the hyperparameters) in its own config.yaml
                tracker.tracker.save(str(path), base_path=str(run_dir), policy="now")
        if scores:
            tracker.tracker.log(
                {"eval": wandb.Table(columns=["metric", "value"], data=[[k, v] for k, v in scores.items()])}
            )
            tracker.tracker.summary.update({f"eval/{k}": v for k, v in scores.items()})
    elif tracker.name == "tensorboard":
        summary = run_dir / "summary.json"
        if summary.is_file():
            tracker.writer.add_text("summary", "```\n" + summary.read_text(encoding="utf-8") + "\n```")
        if scores:
            rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in scores.items())
            tracker.writer.add_text("eval", "| metric | value |\n|---|---|\n" + rows)
    elif scores:  # trackio keeps no files
        tracker.log({f"eval/{k}": v for k, v in scores.items()})


def _eval_scores(run_dir: Path) -> dict[str, float]:
    path = run_dir / "eval.json"
    if not path.is_file():
        return {}
    tuned = (json.loads(path.read_text(encoding="utf-8")).get("metrics") or {}).get("tuned") or {}
    return {k: float(v) for k, v in tuned.items() if _number(v)}


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
