"""`lmtune eval` and `lmtune report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lmtune.cli.app import SetOpt, _count, _quiet_libraries, app, emit_json, err, out, say
from lmtune.errors import LmtuneError


@app.command("eval")
def eval_(
    run: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_OR_MODEL",
            help="Run directory (runs/<name>), or a model (hub id, local directory, preset) to score as it is.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="Held-out data in the run's shape (its column mapping applies); default: its validation."),
    ] = None,
    references: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated reference columns, e.g. summary1,summary2,summary3 (the first is the answer)."
        ),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            help="The base model prompted on the same data, side by side: zero-shot, few-shot:K (random "
            "demonstrations from the training split) or few-shot:K:retrieved (the K most similar); repeatable."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N examples only.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens generated per example.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    set_: SetOpt = None,
    forgetting: Annotated[
        str | None,
        typer.Option(help="General text to score base and tuned model on: 'general', 'stories' or a .txt file."),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help='Score a file of system outputs (.jsonl/.json/.csv): {"prediction", "references": [...]} '
            '(or "reference", or "label"); optional "id", "input".'
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: accuracy, f1, precision, recall, bleu, chrf, rouge (rouge1/rouge2/rougeL), "
            "exact_match; for a run also perplexity and token_accuracy (teacher-forced on the references). Default: accuracy,f1,precision,recall when every prediction and reference is at most 3 "
            "words, each example has one reference and there are at most 50 distinct references (labels); "
            "otherwise rouge,bleu,chrf,exact_match."
        ),
    ] = None,
    baseline_predictions: Annotated[
        Path | None,
        typer.Option(help="Another system's outputs on the same examples: deltas with paired-bootstrap 95% CIs."),
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the comparison.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed: the same seed gives the same intervals.")] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Score a run's tuned model on held-out data, against the base model prompted zero-/few-shot (--baseline), or
    score a file of predictions. Metrics: fractions 0-1 for labels and exact match, points 0-100 for BLEU/chrF/ROUGE.
    A run's results go to RUN/eval.json (read by `lmtune report`)."""
    if run is not None and predictions is not None:
        raise LmtuneError(f"give either a run ({run}) or --predictions, not both")
    if run is not None:
        _eval_run(
            run,
            data,
            references,
            metrics,
            baseline,
            limit,
            max_new_tokens,
            batch_size,
            seed,
            forgetting,
            set_ or [],
            json_,
        )
        return
    if predictions is None:
        raise LmtuneError(
            "nothing to evaluate",
            hint="give a run directory (lmtune eval runs/NAME --data test.jsonl) or --predictions FILE",
        )
    from lmtune.api.run_jobs import score_predictions

    report = score_predictions(
        predictions, metrics=metrics, baseline=baseline_predictions, n_resamples=resamples, seed=seed
    )
    if json_:
        emit_json(report.to_dict())
        return
    _print_eval(report)


def _eval_run(
    run: Path,
    data: str | None,
    references: str | None,
    metrics: str | None,
    baselines: list[str] | None,
    limit: int | None,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    forgetting: str | None,
    overrides: list[str],
    json_: bool,
) -> None:
    _quiet_libraries()
    from rich.markup import escape

    from lmtune.api import evaluate_run
    from lmtune.api.run_jobs import POINTS

    result = evaluate_run(
        run,
        data=data,
        references=[r.strip() for r in (references or "").split(",") if r.strip()],
        metrics=[m.strip() for m in (metrics or "").split(",") if m.strip()],
        baselines=baselines or [],
        limit=limit,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        forgetting=forgetting,
        overrides=overrides,
        report=say,
    )
    if json_:
        emit_json(result.as_dict())
        return
    systems = list(result.metrics)
    keys = [k for k, v in result.metrics["tuned"].items() if isinstance(v, (int, float))]
    table = Table("metric", *map(escape, systems), title=f"{escape(str(result.data['source']))} "
                  f"({_count(result.data['examples'], 'example')})")  # fmt: skip
    for key in keys:
        digits = 2 if key in POINTS else 4
        table.add_row(key, *(f"{result.metrics[s][key]:.{digits}f}" for s in systems))
    out.print(table)
    if result.verdict:
        out.print(escape(result.verdict), style="bold", highlight=False)
    per_type = result.metrics["tuned"].get("per_type")  # a token-classification run: seqeval's table by entity type
    if per_type:
        types = Table("entity", "precision", "recall", "f1", "support", title="per entity type")
        for kind, v in per_type.items():
            types.add_row(escape(kind), *(f"{v[k]:.4f}" for k in ("precision", "recall", "f1")), str(v["support"]))
        out.print(types)
    if (run / "eval.json").is_file():
        out.print(f"wrote {run / 'eval.json'}", highlight=False)


def _print_eval(report: Any) -> None:
    from rich.markup import escape

    from lmtune.api.run_jobs import POINTS

    def fmt(key: str, value: float, sign: str = "") -> str:
        return f"{value:{sign}.2f}" if key in POINTS else f"{value:{sign}.4f}"

    if report.chosen != "given":
        err.print(f"metrics: {', '.join(report.metrics)} ({report.chosen}; choose with --metrics)", highlight=False)
    table = Table("metric", "value", title=f"{escape(report.source)} ({_count(report.count, 'example')})")
    for key, value in report.metrics.items():
        table.add_row(key, fmt(key, value))
    out.print(table)
    if report.per_class:
        names = sorted(report.per_class, key=["precision", "recall", "f1"].index)
        per_class = Table("label", *names, title="per class")
        for label in report.per_class[names[0]]:
            per_class.add_row(escape(label), *(f"{report.per_class[m][label]:.4f}" for m in names))
        out.print(per_class)
    c = report.comparison
    if c is None:
        return
    first = next(iter(c.deltas.values()))
    ci = f"{first.confidence:.0%} CI"
    cmp_table = Table(
        "metric", "baseline", "system", "delta", ci, "p", title=f"system vs baseline {escape(c.baseline)}"
    )
    for key, d in c.deltas.items():
        cmp_table.add_row(
            key,
            fmt(key, d.value_a),
            fmt(key, d.value_b),
            fmt(key, d.delta, "+"),
            f"{fmt(key, d.low, '+')}..{fmt(key, d.high, '+')}",
            f"{d.p_value:.3f}",
        )
    out.print(cmp_table)
    style = "green" if c.deltas[c.headline].low > 0 else "red" if c.deltas[c.headline].high < 0 else "yellow"
    out.print(escape(c.verdict), style=style, highlight=False)
    out.print(f"paired bootstrap: {c.n_resamples} resamples, seed {c.seed}", style="dim", highlight=False)


@app.command("report")
def report_(
    run: Annotated[Path, typer.Argument(help="Run directory (runs/<name>).")],
    json_: Annotated[bool, typer.Option("--json", help='Print {"html": ..., "model_card": ...}.')] = False,
) -> None:
    """(Re)build the run's report.html (self-contained, with plots) and README.md model card from its files."""
    from lmtune.api.run_jobs import write_report

    paths = write_report(run)
    if json_:
        emit_json({"html": str(paths.html), "model_card": str(paths.model_card)})
        return
    out.print(f"wrote {paths.html}\nwrote {paths.model_card}", markup=False, highlight=False)
