"""What `lmtune tune` leaves in the study directory: trials.csv, best.yaml (the best trial's full config, ready for
`lmtune train`) and study.html (one self-contained page: Optuna's optimisation history, parameter importances and
parallel coordinates drawn by its matplotlib backend, the best trial against the starting config, every trial).

The best trial is set against the config's own values (the study's first trial) on the validation split: where the
metric is a per-example label metric (a classifier's accuracy or F1) both final models predict the split again and
the difference gets a paired-bootstrap interval (lmtune.evaluate.bootstrap).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lmtune.api.setup import Say
from lmtune.config import ConfigLike, RunConfig
from lmtune.fileio import atomic_write_text
from lmtune.html import Markup, cards, esc, image, page, table
from lmtune.tasks import TASKS

if TYPE_CHECKING:
    from lmtune.api.search import TuneResult

BEST = "best.yaml"
TRIALS_CSV = "trials.csv"
PAGE = "study.html"
LABEL_METRICS = ("accuracy", "f1")


def write_outputs(
    study: Any, result: TuneResult, cfg: RunConfig, config: ConfigLike, overrides: Sequence[str], say: Say
) -> dict[str, str]:
    """Write trials.csv, best.yaml (when a trial finished) and study.html; return their paths by name."""
    out = result.study_dir
    files = {TRIALS_CSV: str(out / TRIALS_CSV), PAGE: str(out / PAGE)}
    atomic_write_text(out / TRIALS_CSV, trials_csv(result.trials))
    if result.best is not None:
        atomic_write_text(out / BEST, best_yaml(result, cfg))
        files[BEST] = str(out / BEST)
    comparison = compare_best(result, cfg)
    atomic_write_text(out / PAGE, render_study(study, result, comparison))
    return files


def trials_csv(trials: Sequence[dict[str, Any]]) -> str:
    names = sorted({k for t in trials for k in t["params"]})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["number", "state", "value", *names, "steps", "seconds", "start", "run_dir", "reason"])
    for t in trials:
        writer.writerow([t["number"], t["state"], t["value"], *(t["params"].get(n) for n in names), t["steps"],
                         t["seconds"], t["start"], t["run_dir"], t["reason"]])  # fmt: skip
    return buf.getvalue()


def best_yaml(result: TuneResult, cfg: RunConfig) -> str:
    """The best trial's resolved config.yaml, renamed `<name>-best` and without its trial directory."""
    best = result.best
    assert best is not None
    raw = yaml.safe_load((Path(best["run_dir"]) / "config.yaml").read_text(encoding="utf-8"))
    raw["name"] = f"{cfg.name}-best"
    raw.pop("output_dir", None)
    head = (
        f"# lmtune tune: trial {best['number']} of study {result.study_name}, validation {result.metric} "
        f"{best['value']:.6g}\n# lmtune train {BEST}\n"
    )
    return head + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def compare_best(result: TuneResult, cfg: RunConfig) -> dict[str, Any] | None:
    """The best trial against the starting one: their values and, for label metrics, the paired bootstrap."""
    best, start = result.best, result.start
    if best is None or start is None or start.get("value") is None:
        return None
    out: dict[str, Any] = {"start": start, "best": best, "delta": best["value"] - start["value"]}
    # A per-example label to resample exists where the model predicts one label per text (a classifier head).
    per_example = TASKS[cfg.task].model == "classifier"
    if result.metric not in LABEL_METRICS or best["number"] == start["number"] or not per_example:
        out["note"] = "no per-example predictions for this metric: the difference has no bootstrap interval"
        return out
    from lmtune.api.heads import predict_labels, run_examples
    from lmtune.data.formats import LabelExample
    from lmtune.evaluate.bootstrap import paired_bootstrap
    from lmtune.export import load_tuned

    preds, refs = [], []
    for run in (start, best):
        model, tokenizer, run_cfg = load_tuned(Path(run["run_dir"]))
        examples, _, _ = run_examples(run_cfg, None)
        preds.append(predict_labels(model, tokenizer, run_cfg, examples, 32)[0])
        refs = [(ex.label,) for ex in examples if isinstance(ex, LabelExample)]
    delta = paired_bootstrap(result.metric, preds[0], preds[1], refs, seed=cfg.seed)
    out["bootstrap"] = delta.to_dict()
    return out


def _png(plot: Any, study: Any, **kwargs: Any) -> bytes | None:
    """One of Optuna's matplotlib plots as PNG bytes (None when the study cannot draw it yet)."""
    from lmtune.plots import figure_png

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning
            ax = plot(study, **kwargs)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
    figure.set_size_inches(7.5, 3.8)
    return figure_png(figure)


def render_study(study: Any, result: TuneResult, comparison: dict[str, Any] | None) -> str:
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState

    trials = result.trials
    count = {s: sum(1 for t in trials if t["state"] == s) for s in ("complete", "pruned", "fail")}
    best = _fmt(result.best["value"]) if result.best else "-"
    figures = [("trials finished", count["complete"]), ("pruned", count["pruned"]), ("failed", count["fail"]),
               ("training steps", sum(t["steps"] or 0 for t in trials)), (f"best {result.metric}", best)]  # fmt: skip
    body = [
        f"<h1>Study {esc(result.study_name)}</h1>",
        f'<p class="subtitle">validation {esc(result.metric)} ({esc(result.direction)}) · storage '
        f"<code>{esc(result.storage)}</code></p>",
        cards(figures),
    ]
    body += _comparison_html(comparison, result.metric)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    for title, plot, need in (("Optimisation history", ovm.plot_optimization_history, 1),
                              ("Parameter importances", ovm.plot_param_importances, 2),
                              ("Parallel coordinates", ovm.plot_parallel_coordinate, 2)):  # fmt: skip
        png = _png(plot, study) if len(complete) >= need else None
        body.append(f"<h2>{title}</h2>")
        body.append(image(png, title) if png else f'<p class="muted">needs {need}+ finished trials that differ</p>')
    body.append("<h2>Trials</h2>")
    names = sorted({k for t in trials for k in t["params"]})
    rows = [[t["number"], t["state"] + (" (start)" if t["start"] else ""), _fmt(t["value"]),
             *(_fmt(t["params"].get(n)) for n in names), t["steps"], _fmt(t["seconds"]), _link(result.study_dir, t),
             t["reason"] or ""] for t in trials]  # fmt: skip
    body.append(table(["#", "state", result.metric, *names, "steps", "seconds", "run", "reason"], rows, numeric=[2]))
    return page(f"lmtune study {result.study_name}", body)


def _comparison_html(comparison: dict[str, Any] | None, metric: str) -> list[str]:
    if comparison is None:
        return ['<p class="muted">no comparison with the starting config: its trial did not finish</p>']
    start, best = comparison["start"], comparison["best"]
    names = sorted(set(start["params"]) | set(best["params"]))
    rows = [[n, _fmt(start["params"].get(n)), _fmt(best["params"].get(n))] for n in names]
    rows.append([Markup(f"<b>validation {esc(metric)}</b>"), _fmt(start["value"]), _fmt(best["value"])])
    out = ["<h2>Best trial against the starting config</h2>",
           table(["", f"start (trial {start['number']})", f"best (trial {best['number']})"], rows)]  # fmt: skip
    b = comparison.get("bootstrap")
    if b:
        pct = round(100 * b["confidence"])
        out.append(
            f'<div class="verdict">best minus start: {b["delta"]:+.4f} {esc(metric)} [{pct}% CI {b["low"]:+.4f}..'
            f"{b['high']:+.4f}], p = {b['p_value']:.3g} (paired bootstrap over {b['n_resamples']} resamples of the "
            "validation split)</div>"
        )
    else:
        out.append(f'<p class="muted">best minus start: {comparison["delta"]:+.4g}; {esc(comparison["note"])}</p>')
    return out


def _link(study_dir: Path, t: dict[str, Any]) -> Markup | str:
    if not t["run_dir"]:
        return ""
    run = Path(t["run_dir"])
    target = run / "report.html" if (run / "report.html").is_file() else run
    try:
        rel = os.path.relpath(target, study_dir)
    except ValueError:
        rel = str(target)
    return Markup(f'<a href="{esc(rel)}">{esc(run.name)}</a>')


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)
