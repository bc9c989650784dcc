"""The `lmtune` command: parse arguments, call the Python API, print. No logic of its own."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

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


@data_app.command("check")
def data_check(
    source: Annotated[Path, typer.Argument(help="A YAML config (its train/validation data) or one data file.")],
    set_: SetOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    html: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report (with plots) here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the token-length histogram PNG here.")] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when there are warnings (errors always exit 2).")] = False,
    near: Annotated[float, typer.Option(help="Near-duplicate/leak threshold (Jaccard of shingles, 0-1].")] = 0.85,
    label: Annotated[str | None, typer.Option(help="Label field to check (default: 'label' when present).")] = None,
    show: Annotated[int, typer.Option(help="Findings to list (all are in --json and --html).")] = 30,
) -> None:
    """Validate every record and report data quality; exit 0 clean, 1 warnings with --strict, 2 errors."""
    _quiet_libraries()
    from lmtune.api import check_data
    from lmtune.data.check_report import render_html, write_length_png

    report = check_data(source, overrides=set_ or [], near=near, label=label)
    if html is not None:
        from lmtune.fileio import atomic_write_text

        html.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(html, render_html(report, str(source)))
    if plot is not None:
        write_length_png(report, plot)
    if json_:
        emit_json(report.as_dict())
    else:
        _print_check(report, show)
        for path in (html, plot):
            if path is not None:
                out.print(f"wrote {path}")
    raise typer.Exit(report.exit_code(strict))


def _print_check(report: Any, show: int) -> None:
    from lmtune.data.quality import length_percentiles

    table = Table(
        "split", "records", "valid", "format", "p50", "p95", "max", "truncated", "dropped", "exact dup", "near dup"
    )
    for name, s in report.splits.items():
        pct = length_percentiles(s.lengths)
        cells = [s.records, s.examples, s.format or "-", pct.get("p50"), pct.get("p95"), pct.get("max")]
        table.add_row(name, *map(str, [*cells, s.truncated, s.dropped, s.exact_duplicates, s.near_duplicates]))
    out.print(table)
    for name, s in report.splits.items():
        if s.labels:
            out.print(f"{name} labels: {s.labels}")
        if s.roles:
            out.print(f"{name} roles: {s.roles}")
    t = report.template
    if t:
        state = "[green]ok[/green]" if t.get("ok") else "[red]problem[/red]"
        out.print(f"template: {t['mode']}, EOS {t['eos_token']!r}, stop tokens {t['stop_tokens']}: {state}")
    styles = {"error": "bold red", "warning": "yellow", "info": "dim"}
    for f in report.findings[:show]:
        where = f"{f.where}: " if f.where else ""
        field = f"field '{f.field}': " if f.field else ""
        out.print(f"[{styles[f.severity]}]{f.severity}[/] {where}{field}{f.message}", highlight=False)
    if len(report.findings) > show:
        out.print(f"... and {len(report.findings) - show} more findings (--show N, --json or --html for all)")
    n_err, n_warn = len(report.errors), len(report.warnings)
    verdict = "[bold red]errors[/]" if n_err else "[yellow]warnings[/]" if n_warn else "[green]clean[/]"
    out.print(f"{verdict}: {_count(n_err, 'error')}, {_count(n_warn, 'warning')} in {report.seconds:.1f} s")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@data_app.command("redact")
def data_redact(
    source: Annotated[Path, typer.Argument(help="Data file to mask personal data in.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the masked copy.")],
    kinds: Annotated[
        str, typer.Option(help="Comma-separated kinds: email, phone, card, iban.")
    ] = "email,phone,card,iban",
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Mask e-mail addresses, phone numbers, card and IBAN numbers ([EMAIL], [PHONE], ...) in every text field."""
    from lmtune.data.pii import redact_file

    result = redact_file(
        str(source), str(out_path), kinds=[k.strip() for k in kinds.split(",") if k.strip()], overwrite=overwrite
    )
    if json_:
        emit_json(result.to_dict())
        return
    d = result.to_dict()
    out.print(f"masked {d['counts'] or 'nothing'} in {d['records_changed']} of {d['records']} records -> {result.out}")
    for r in result.redactions[:20]:
        out.print(f"  {r.source}:{r.line}: field '{r.field}': {', '.join(r.kinds)}", highlight=False)


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


FieldsOpt = Annotated[
    str | None, typer.Option(help="Compare these string fields, joined (comma-separated), e.g. dialogue,summary.")
]
FormatOpt = Annotated[str, typer.Option("--format", help="Record shape: auto, text, prompt_completion, messages, ...")]


def _fields(fields: str | None) -> list[str] | None:
    return [f.strip() for f in fields.split(",") if f.strip()] if fields else None


@data_app.command("split")
def data_split(
    source: Annotated[str, typer.Argument(help="Data file to split (.jsonl, .json, .csv, .tsv, .parquet).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the split files and manifest.json.")],
    val: Annotated[float, typer.Option("--val", help="Validation fraction (0 = no validation file).")] = 0.1,
    test: Annotated[float, typer.Option("--test", help="Test fraction (0 = no test file).")] = 0.1,
    stratify: Annotated[str | None, typer.Option(help="Label field whose proportions every part keeps.")] = None,
    group_by: Annotated[str | None, typer.Option(help="Field whose records all go to the same part.")] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same split.")] = 42,
    overwrite: Annotated[bool, typer.Option(help="Replace existing split files in --out.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the manifest as one JSON object.")] = False,
) -> None:
    """Write seeded train/validation/test files (records unchanged) and manifest.json into --out."""
    from lmtune.data.split import split_file

    result = split_file(
        source, out_dir, val=val, test=test, stratify=stratify, group_by=group_by, seed=seed, overwrite=overwrite
    )
    if json_:
        emit_json({**result.manifest, "manifest": result.manifest_path})
        return
    extra_columns = (["labels"] if stratify else []) + (["groups"] if group_by else [])
    table = Table("part", "records", "file", "sha256", *extra_columns)
    for name, part in result.manifest["splits"].items():
        extra = [str(part["labels"])] if stratify else []
        extra += [str(part["groups"])] if group_by else []
        table.add_row(name, str(part["count"]), str(Path(result.out_dir) / part["path"]), part["sha256"][:12], *extra)
    out.print(table)
    out.print(f"wrote {result.manifest_path}")


@data_app.command("dedup")
def data_dedup(
    source: Annotated[str, typer.Argument(help="Data file to deduplicate.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the kept records (format by suffix).")],
    near: Annotated[float, typer.Option(help="Near-duplicate threshold: Jaccard of word + word-pair sets.")] = 0.85,
    exact_only: Annotated[bool, typer.Option(help="Remove exact (normalised) duplicates only.")] = False,
    fields: FieldsOpt = None,
    format_: FormatOpt = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    show: Annotated[int, typer.Option(help="Removed records to list (all are in --json).")] = 30,
) -> None:
    """Keep the first of each group of duplicates and write the records to --out, unchanged."""
    from lmtune.data.dedup import dedup_file

    result = dedup_file(
        source,
        str(out_path),
        near=None if exact_only else near,
        fields=_fields(fields),
        format=format_,
        overwrite=overwrite,
    )
    if json_:
        emit_json(result.to_dict())
        return
    for d in result.duplicates[:show]:
        how = "exact duplicate" if d.kind == "exact" else f"near duplicate ({d.similarity:.2f})"
        out.print(f"  {d.doc.where}: {how} of line {d.of.line}", highlight=False)
    if len(result.duplicates) > show:
        out.print(f"  ... and {len(result.duplicates) - show} more (--show N or --json for all)")
    counts = result.counts()
    out.print(
        f"removed {counts['exact']} exact and {counts['near']} near duplicates: kept {result.kept} of "
        f"{result.records} records -> {result.out} ({result.seconds:.1f} s)",
        highlight=False,
    )


@data_app.command("leakage")
def data_leakage(
    files: Annotated[list[str], typer.Argument(help="TRAIN VAL [TEST ...]: training data first, then held-out sets.")],
    near: Annotated[float, typer.Option(help="Near-duplicate threshold; 0 turns it off.")] = 0.8,
    ngram: Annotated[int, typer.Option(help="Shared run of this many words counts as a leak; 0 turns it off.")] = 13,
    fields: FieldsOpt = None,
    format_: FormatOpt = "auto",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any leak is found.")] = False,
    show: Annotated[int, typer.Option(help="Leaks to list (all are in --json).")] = 30,
) -> None:
    """Find held-out examples that repeat training ones: exact, near-duplicate, shared n-grams, same input."""
    from lmtune.data.leakage import leakage_report

    report = leakage_report(files, near=near or None, ngram=ngram, fields=_fields(fields), format=format_)
    if json_:
        emit_json(report.to_dict())
    else:
        _print_leaks(report, show, ngram)
    raise typer.Exit(1 if strict and report.leaks else 0)


def _print_leaks(report: Any, show: int, ngram: int) -> None:
    if report.leaks:
        table = Table("kind", "similarity", "earlier", "later", "detail")
        for leak in report.leaks[:show]:
            detail = ""
            if leak.shared_ngrams is not None:
                example = leak.example if len(leak.example) <= 60 else leak.example[:57] + "..."
                detail = f"{leak.shared_ngrams} shared {ngram}-grams, e.g. “{example}”"
            earlier, later = (f"{w.split}:{w.line}" for w in (leak.a, leak.b))
            table.add_row(leak.kind, f"{leak.similarity:.2f}", earlier, later, detail)
        out.print(table)
        if len(report.leaks) > show:
            out.print(f"... and {len(report.leaks) - show} more leaks (--show N or --json for all)")
    counts = {kind: n for kind, n in report.counts().items() if n and kind != "total"}
    for name, split in report.splits.items():
        out.print(f"{name}: {split['source']} ({split['records']} records)", highlight=False)
    found = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    verdict = f"[yellow]leaks[/]: {found}" if counts else "[green]clean[/]: no leaks"
    out.print(f"{verdict} ({report.seconds:.2f} s)", highlight=False)


@data_app.command("augment")
def data_augment(
    source: Annotated[str, typer.Argument(help="Training data file (.jsonl, .json, .csv, .tsv, .parquet).")],
    strategy: Annotated[str, typer.Option(help="noise | eda | paraphrase | backtranslate | code-rename")],
    out_path: Annotated[Path, typer.Option("--out", help="File to write (.jsonl or .json): originals, then copies.")],
    model: Annotated[
        str | None, typer.Option(help="Model for paraphrase/backtranslate: hub id, local directory or preset.")
    ] = None,
    fields: Annotated[
        str | None,
        typer.Option(help="Columns to change (comma-separated; messages:user for a role's turns). Default: inputs."),
    ] = None,
    copies: Annotated[int, typer.Option(help="Copies per record.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same copies.")] = 0,
    rate: Annotated[float | None, typer.Option(help="Share of letters/words changed (noise 0.05, eda 0.1).")] = None,
    level: Annotated[str, typer.Option(help="Noise level: both, char or word.")] = "both",
    template: Annotated[
        str | None, typer.Option(help="Prompt template with {text} (backtranslate: also {source}, {target}).")
    ] = None,
    pivot: Annotated[str, typer.Option(help="Language backtranslate goes through.")] = "German",
    temperature: Annotated[float, typer.Option(help="Sampling temperature for the model (0 = greedy).")] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens the model writes per text.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Texts per generation batch.")] = 8,
    only_new: Annotated[bool, typer.Option(help="Write only the copies, not the originals.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    force: Annotated[bool, typer.Option(help="Augment a file whose name says validation/test.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Let the model's hub repo run its own code.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write the training records followed by augmented copies, each marked with an `augmentation` field."""
    _quiet_libraries()
    from lmtune.api import augment
    from lmtune.data.augment import AugmentOptions

    report = augment(
        source,
        strategy,
        out=out_path,
        model=model,
        fields=_fields(fields),
        copies=copies,
        seed=seed,
        options=AugmentOptions(rate=rate, noise_level=level, template=template, pivot=pivot),
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        only_new=only_new,
        overwrite=overwrite,
        force=force,
        trust_remote_code=trust_remote_code,
    )
    if json_:
        emit_json(report.to_dict())
        return
    originals = "" if only_new else f"{report.originals} originals + "
    out.print(
        f"wrote {report.out}: {originals}{report.copies} {report.strategy} copies "
        f"(fields {', '.join(report.fields)}; seed {report.seed}; {report.seconds:.1f} s)",
        highlight=False,
    )
    if report.skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items(), key=lambda kv: -kv[1]))
        out.print(f"skipped {sum(report.skipped.values())} copies: {reasons}", highlight=False)
    if report.notes:
        out.print("texts: " + ", ".join(f"{n} {what}" for what, n in sorted(report.notes.items())), highlight=False)
    if not report.copies:
        err.print("[yellow]warning:[/yellow] no copy was made", highlight=False)


@app.command()
def estimate(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    probe_steps: Annotated[
        int, typer.Option("--probe-steps", help="Also run the run's first N optimizer steps and measure (0: don't).")
    ] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    set_: SetOpt = None,
) -> None:
    """Parameters, peak memory and time of the run CONFIG describes, before spending compute (nothing is written)."""
    _quiet_libraries()
    from lmtune.api import estimate as run_estimate

    result = run_estimate(config, overrides=set_ or [], probe_steps=probe_steps, console=err)
    if json_:
        emit_json(result.as_dict())
        return
    _print_estimate(result)


def _print_estimate(r: Any) -> None:
    mib = lambda n: f"{n / 2**20:,.1f} MiB"  # noqa: E731
    out.print(
        f"[bold]{r.config}[/bold]: {r.model} · {r.method} · {r.device} · {r.precision}\n"
        f"parameters: {r.total_params:,} total, {r.trainable_params:,} trainable ({r.trainable_percent:.2f}%)"
        + (f", of which LoRA adds {r.lora_params:,}" if r.lora_params else ""),
        highlight=False,
    )
    p, m = r.probe, r.memory
    table = Table("memory", f"run's heaviest step ({m.rows}×{m.width})", title="peak memory of a training step")
    if p:
        table.add_column(f"probed steps 1-{p.memory_steps} ({p.estimate.rows}×{p.estimate.width})")
    terms = [
        ("weights", "weights"),
        ("gradients", "gradients"),
        ("optimizer states (AdamW)", "optimizer_states"),
        ("activations saved for backward", "activations"),
        ("logits and loss", "logits"),
        ("autocast weight copies", "autocast_copies"),
        ("optimizer temporaries", "optimizer_temporaries"),
    ]
    for label, key in terms:
        table.add_row(label, mib(getattr(m, key)), *([mib(getattr(p.estimate, key))] if p else []))
    at = {"forward": "end of forward", "backward": "in backward", "optimizer": "optimizer step"}[m.phase]
    table.add_row("[bold]peak estimate[/bold]", f"{mib(m.peak)} ({at})", *([mib(p.estimate.peak)] if p else []))
    if p:
        table.add_row("measured peak", "", f"{mib(p.peak)}")
        table.add_row("estimate / measured", "", f"{p.ratio:.2f}")
        if p.rss_peak is not None:
            table.add_row("peak RSS above the pre-model baseline", "", mib(p.rss_peak))
    out.print(table)
    if p:
        out.print(f"measured: {p.measures}", highlight=False)
    out.print(
        f"run: {r.steps:,} steps of {r.grad_accum} × {r.micro_batch_size} rows, {r.tokens:,} padded tokens "
        f"({r.trained_tokens:,} trained)\n"
        f"time (analytic, rough): {r.time_s:,.1f} s = {r.flops:.3g} FLOPs / {r.throughput_flops / 1e9:.1f} GFLOP/s",
        highlight=False,
    )
    if p:
        out.print(
            f"time (probe): median step {p.median_step_s * 1000:,.0f} ms → forecast {p.forecast_s:,.1f} s "
            f"of training for {r.steps:,} steps (evaluation and checkpoints not included)",
            highlight=False,
        )
    for note in r.notes:
        out.print(f"note: {note}", style="dim", highlight=False)


@app.command("eval")
def eval_(
    run: Annotated[
        Path | None,
        typer.Argument(metavar="RUN", help="Run directory (runs/<name>) whose tuned model to evaluate."),
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
            "exact_match. Default: accuracy,f1,precision,recall when every prediction and reference is at most 3 "
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
        _eval_run(run, data, references, metrics, baseline, limit, max_new_tokens, batch_size, seed, json_)
        return
    if predictions is None:
        raise LmtuneError(
            "nothing to evaluate",
            hint="give a run directory (lmtune eval runs/NAME --data test.jsonl) or --predictions FILE",
        )
    from lmtune.evaluate.predictions import score_predictions

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
    json_: bool,
) -> None:
    _quiet_libraries()
    from rich.markup import escape

    from lmtune.api import evaluate_run
    from lmtune.evaluate.metrics import POINTS

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
        console=err,
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
    out.print(f"wrote {run / 'eval.json'}", highlight=False)


def _print_eval(report: Any) -> None:
    from rich.markup import escape

    from lmtune.evaluate.metrics import POINTS

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
    from lmtune.report import write_report

    paths = write_report(run)
    if json_:
        emit_json({"html": str(paths.html), "model_card": str(paths.model_card)})
        return
    out.print(f"wrote {paths.html}\nwrote {paths.model_card}", markup=False, highlight=False)


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
