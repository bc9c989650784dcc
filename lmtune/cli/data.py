"""`lmtune data ...`: preview, check, redact, split, dedup, leakage, augment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lmtune.cli.app import SetOpt, _count, _quiet_libraries, data_app, emit_json, err, out


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
    task: Annotated[
        str | None,
        typer.Option(help="The task a data file is for (sft, classification, dpo, ...; a config names its own)."),
    ] = None,
) -> None:
    """Validate every record and report data quality; exit 0 clean, 1 warnings with --strict, 2 errors."""
    overrides = [*(set_ or []), *([f"task={task}"] if task else [])]
    if source.suffix.lower() in (".yaml", ".yml"):  # a config error shows before torch and transformers load
        from lmtune.config import load_config

        load_config(source, overrides)
    _quiet_libraries(forks=False)
    from lmtune.api.check import check_data
    from lmtune.api.data_jobs import write_check_files

    report = check_data(source, overrides=overrides, near=near, label=label)
    written = write_check_files(report, str(source), html, plot)
    if json_:
        emit_json(report.as_dict())
    else:
        _print_check(report, show)
        for path in written:
            out.print(f"wrote {path}")
    raise typer.Exit(report.exit_code(strict))


def _print_check(report: Any, show: int) -> None:
    from lmtune.api.data_jobs import length_percentiles

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
    from lmtune.api.data_jobs import redact_file

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
    from lmtune.api.data_jobs import split_file

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
    from lmtune.api.data_jobs import dedup_file

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
    from lmtune.api.data_jobs import leakage_report

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
    from lmtune.api.data_jobs import AugmentOptions

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
