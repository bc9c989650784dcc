"""report.html: one self-contained page (inline CSS, PNG data URIs, no scripts) with the evidence of a run.

Sections appear in the order a reader asks their questions: did it work (verdict, curves, baseline table), what
did it cost (forgetting), what to change (diagnosis), what does it do (samples), and how it was made (data,
hyperparameters, environment). A section whose inputs the run lacks is left out; the footer says what was missing
and which command adds it.
"""

from __future__ import annotations

from typing import Any

from lmtune.evaluate.metrics import POINTS
from lmtune.html import Markup, cards, esc, image, page, table
from lmtune.plots import before_after, loss_curves, metric_curves, named_curves, smoothing_weight, system_bars
from lmtune.report.run import FILES, TUNED, Run
from lmtune.report.views import (
    comparison_rows,
    diagnosis,
    flatten,
    fmt_metric,
    fmt_seconds,
    fmt_value,
    forgetting,
    forgetting_warning,
    headline_metric,
    kept_step,
    leakage_text,
    method_text,
    number,
    per_name,
    samples,
    series,
    splits,
    system_metrics,
    trainable_text,
    validation_metrics,
    verdicts,
)

MAX_SAMPLES = 20  # sample rows shown; eval.json keeps them all
MAX_CHARS = 400  # characters of one sample text shown

# What adds a missing file (for the footer).
_MAKES = {
    "summary.json": "written when `lmtune train` finishes",
    "eval.json": "`lmtune eval RUN --data test.jsonl --baseline few-shot:3 --forgetting general.txt`",
    "metrics.jsonl": "written by `lmtune train` as it trains",
}


def render_report(run: Run) -> str:
    body = _header(run)
    for section in (
        _curves,
        _validation_metrics,
        _per_source,
        _rewards,
        _baseline,
        _forgetting,
        _diagnosis,
        _samples,
        _data,
        _hyperparameters,
        _environment,
    ):
        body += section(run)
    body += _footer(run)
    return page(f"lmtune report: {run.name}", body)


def _header(run: Run) -> list[str]:
    s = run.summary
    subtitle = [f"base model <code>{esc(run.model)}</code>" if run.model else "", esc(method_text(run))]
    subtitle += [esc(t) for t in [trainable_text(run)] if t]
    out = [
        f"<h1>Run report: {esc(run.name)}</h1>",
        f'<p class="subtitle">{" · ".join(p for p in subtitle if p)}<br><code>{esc(run.path)}</code></p>',
    ]
    out += [f'<div class="verdict">{esc(v)}</div>' for v in verdicts(run)]
    step, early = kept_step(s)
    if early:
        stop = s.get("early_stopping") if isinstance(s.get("early_stopping"), dict) else {}
        reason = f" ({stop['reason']})" if stop.get("reason") else ""
        stopped = (
            f"Stopped early at step {s.get('stopped_at', s.get('steps'))}{reason}. " if s.get("stopped_early") else ""
        )
        out.append(f'<div class="note">{esc(stopped)}The final model is the best evaluation: step {esc(step)}.</div>')
    if run.summary == {} and run.metrics:
        out.append('<div class="note">The run has no summary.json: it did not finish (or is still running).</div>')
    if run.bad_metric_lines:
        out.append(f'<div class="note">{run.bad_metric_lines} unreadable line(s) of metrics.jsonl were skipped.</div>')
    items: list[tuple[str, Any]] = []
    if isinstance(s.get("steps"), int):
        items.append(
            ("optimizer steps" + (f" · {s['epochs']:g} epochs" if number(s.get("epochs")) else ""), s["steps"])
        )
    if isinstance(s.get("trained_tokens"), int):
        items.append(("trained tokens", f"{s['trained_tokens']:,}"))
    if number(s.get("train_time_s")) is not None:
        items.append(("training time", fmt_seconds(s["train_time_s"])))
    first, last = number(s.get("first_train_loss")), number(s.get("last_train_loss"))
    if first is not None and last is not None:
        items.append(("train loss first → last", f"{first:.4f} → {last:.4f}"))
    before, after = number(s.get("val_loss_before")), number(s.get("val_loss_after"))
    if after is not None:
        items.append(
            ("validation loss before → after", f"{before:.4f} → {after:.4f}" if before is not None else f"{after:.4f}")
        )
    if number(s.get("best_val_loss")) is not None:
        items.append((f"best validation loss (step {s.get('best_val_step')})", f"{s['best_val_loss']:.4f}"))
    final = number(s.get("val_loss_final"))
    if final is not None and early and final != after:
        items.append((f"validation loss of the final model (step {step})", f"{final:.4f}"))
    f = forgetting(run)
    if f is not None and number(f.get("ratio")) is not None:
        items.append((f"forgetting: general-text {f.get('ratio_of', 'loss')} after / before", f"×{f['ratio']:.3f}"))
    return [*out, cards(items)] if items else out


def _curves(run: Run) -> list[str]:
    train, val, lr = series(run, "train", "loss"), series(run, "validation", "loss"), series(run, "train", "lr")
    if not train and not val:
        return []
    step, early = kept_step(run.summary)
    mark = None
    if step is not None and len(val) > 1:
        mark = (step, f"final model (step {step})" if early else f"best validation (step {step})")
    png = loss_curves(train, val, lr, mark)
    weight = smoothing_weight(len(train))
    note = (
        f"Training loss per logged step (faint) and its exponential moving average (weight {weight:.2f}); "
        if weight
        else "Training loss per logged step; "
    )
    note += f"validation loss at {len(val)} evaluations." if val else "no validation split."
    return ["<h2>Loss curves</h2>", image(png, "loss curves"), f'<p class="muted">{esc(note)}</p>']


def _validation_metrics(run: Run) -> list[str]:
    curves = validation_metrics(run)
    if not curves:
        return []
    return ["<h2>Validation metrics</h2>", image(metric_curves(curves), "validation metric curves")]


def _per_source(run: Run) -> list[str]:
    curves = per_name(run, "validation", "loss/")
    if not curves:
        return []
    note = "Validation loss of each source of the mixture: which part of the data the model learned."
    return [
        "<h2>Validation loss per source</h2>",
        image(named_curves(curves, "validation loss"), "validation loss per source"),
        f'<p class="muted">{esc(note)}</p>',
    ]


def _rewards(run: Run) -> list[str]:
    curves = per_name(run, "train", "reward/")
    if not curves:
        return []
    note = "Mean reward of the sampled answers per reward function (unweighted), at each logged step."
    return [
        "<h2>Rewards per function</h2>",
        image(named_curves(curves, "mean reward"), "rewards per function"),
        f'<p class="muted">{esc(note)}</p>',
    ]


def _baseline(run: Run) -> list[str]:
    systems, rows = system_metrics(run), comparison_rows(run)
    if not systems and not rows:
        return []
    out = ["<h2>Baseline vs tuned</h2>"]
    data = run.eval.get("data") if isinstance(run.eval.get("data"), dict) else {}
    if data:
        n, refs = data.get("examples"), data.get("references_per_example")
        out.append(
            f"<p>Evaluated on <code>{esc(data.get('source', '?'))}</code>"
            + (f" ({esc(fmt_value(n))} examples" if n is not None else "")
            + (f", up to {esc(refs)} references each" if isinstance(refs, int) and refs > 1 and n is not None else "")
            + (")" if n is not None else "")
            + ".</p>"
        )
    if systems:
        keys = list(dict.fromkeys(k for values in systems.values() for k in values))
        body = [[k, *(fmt_metric(k, values.get(k)) for values in systems.values())] for k in keys]
        out.append(table(["metric", *systems], body, numeric=range(1, len(systems) + 1)))
        key = headline_metric(keys)
        bars = {name: values[key] for name, values in systems.items() if key in values}
        if key and len(bars) > 1 and len(set(bars.values())) > 1:  # equal bars show nothing the table does not
            digits = 2 if key in POINTS else 4
            out.append(image(system_bars(bars, key, highlight=TUNED, digits=digits), f"{key} by system"))
    if rows:
        ci = rows[0].confidence
        header = ["baseline", "metric", "baseline value", "tuned", "delta", f"{ci:.0%} CI" if ci else "CI", "p"]
        body = []
        for r in rows:
            cls = {"better": "ok", "worse": "error", "tie": "muted"}[r.outcome]
            base, metric, base_value, tuned, delta, interval = r.cells()
            marked = Markup(f'<span class="{cls}">{esc(delta)}</span>')
            p = f"{r.p_value:.3f}" if r.p_value is not None else "–"
            body.append([base, metric, base_value, tuned, marked, interval, p])
        out.append("<p>Tuned minus baseline on the same examples (paired bootstrap):</p>")
        out.append(table(header, body, numeric=range(2, 7)))
    return out


def _forgetting(run: Run) -> list[str]:
    f = forgetting(run)
    if f is None:
        return []
    before, after = f["before"], f["after"]
    warning = forgetting_warning(f)
    out = ["<h2>Forgetting</h2>"]
    source = next((f[k] for k in ("file", "source", "text") if isinstance(f.get(k), str)), None)
    tokens = before.get("tokens")
    out.append(
        "<p>Loss on general text the task data does not cover, before and after fine-tuning"
        + (f" (<code>{esc(source)}</code>" if source else "")
        + (f", {tokens:,} tokens" if isinstance(tokens, int) and source else "")
        + (")" if source else "")
        + ": a rise means the model lost some of what the base model knew.</p>"
    )
    measure = "loss" if number(before.get("loss")) is not None and number(after.get("loss")) is not None else None
    if measure is None and number(before.get("perplexity")) is not None and number(after.get("perplexity")):
        measure = "perplexity"
    if measure:
        out.append(image(before_after(before[measure], after[measure], measure, warn=bool(warning)), "forgetting"))
    rows = [
        [k, fmt_metric(k, number(before.get(k))), fmt_metric(k, number(after.get(k)))]
        for k in ("loss", "perplexity")
        if k in before or k in after
    ]
    out.append(table(["general text", "base model", "tuned model"], rows, numeric=[1, 2]))
    ratio, limit, ppl = number(f.get("ratio")), number(f.get("threshold")), number(f.get("perplexity_ratio"))
    if ratio is not None:
        out.append(
            f"<p>after / before ({esc(f.get('ratio_of', 'as recorded'))}): <b>×{ratio:.3f}</b>"
            + (f" (warning above ×{limit:g})" if limit is not None else "")
            + (f"; perplexity ×{ppl:.3f}" if ppl is not None else "")
            + "</p>"
        )
    out.append(f'<p class="warning">⚠ {esc(warning)}</p>' if warning else '<p class="ok">No forgetting warning.</p>')
    return out


def _diagnosis(run: Run) -> list[str]:
    findings, recorded = diagnosis(run)
    if not findings and not recorded and not run.metrics:
        return []
    out = ["<h2>Diagnosis</h2>"]
    if not recorded:
        out.append('<p class="muted">Computed by this report from metrics.jsonl (the run recorded no diagnosis).</p>')
    if not findings:
        return [*out, '<p class="ok">No sign of over- or underfitting in the curves.</p>']
    rows = [[Markup(f'<span class="warning">{esc(d["kind"])}</span>'), d["message"], d["advice"]] for d in findings]
    return [*out, table(["finding", "what the curves show", "what to try"], rows)]


def _clip(text: str) -> Markup:
    if len(text) <= MAX_CHARS:
        return Markup(esc(text))
    note = f"… [truncated: {MAX_CHARS:,} of {len(text):,} characters shown; eval.json has the full text]"
    return Markup(f'{esc(text[:MAX_CHARS])}<span class="muted">{esc(note)}</span>')


def _references(refs: tuple[str, ...]) -> Markup:
    """The first reference shown, the others folded (DialogSum has three per example; <details> needs no script)."""
    if len(refs) <= 1:
        return _clip(refs[0]) if refs else Markup("")
    more = '<hr class="sep">'.join(_clip(r) for r in refs[1:])
    label = f"+{len(refs) - 1} more reference{'s' if len(refs) > 2 else ''}"
    return Markup(f'{_clip(refs[0])}<details><summary class="muted">{label}</summary>{more}</details>')


def _samples(run: Run) -> list[str]:
    items = samples(run)
    if not items:
        return []
    systems = list(dict.fromkeys(name for s in items for name in s.outputs))
    systems.sort(key=lambda name: name == TUNED)  # baselines first, the tuned model last
    rows = [
        [
            i,
            _clip(s.input),
            _references(s.references),
            *(_clip(s.outputs.get(n, "")) for n in systems),
        ]
        for i, s in enumerate(items[:MAX_SAMPLES], start=1)
    ]
    header = ["#", "input", "reference", *systems]
    # The input is usually the longest text, then the reference: they get wider columns than each output.
    rest = f"{50 / max(1, len(header) - 3):.1f}%"
    widths = "".join(f'<col style="width:{w}">' for w in ["2.5rem", "26%", "21%", *[rest] * (len(header) - 3)])
    html_table = table(header, rows, cls="wide").replace("<thead>", f"<colgroup>{widths}</colgroup><thead>", 1)
    more = len(items) - MAX_SAMPLES
    tail = f'<p class="muted">… and {more} more samples in eval.json</p>' if more > 0 else ""
    return ["<h2>Sample outputs</h2>", html_table, tail]


def _data(run: Run) -> list[str]:
    parts = splits(run)
    if not parts and not run.data:
        return []
    out = ["<h2>Data</h2>"]
    fmt, chat = run.data.get("format"), run.data.get("chat")
    if fmt:
        how = " rendered through the chat template" if chat else " rendered as raw text" if chat is False else ""
        out.append(f"<p>{esc(fmt)} records{how}.</p>")
    rows, hashes = [], []
    named = [(name, info) for name, info in parts.items()]
    for name, info in list(named):  # a mixture's sources, each its own row under its split
        sources = info.get("sources") if isinstance(info.get("sources"), dict) else {}
        named += [(f"{name} · {src}", {"source": sub.get("source", ""), **sub}) for src, sub in sources.items()]
    for name, info in named:
        tokens = info.get("tokens") if isinstance(info.get("tokens"), dict) else {}
        counts = [info.get("records"), info.get("examples")]
        counts += [tokens.get(k) for k in ("tokens", "trained_tokens", "truncated", "dropped")]
        source = Markup(f"<code>{esc(info.get('source', ''))}</code>")
        rows.append([name, source, *(fmt_value(x) if x is not None else "" for x in counts)])
        sha, fingerprint = info.get("file_sha256") or "–", info.get("fingerprint") or "–"
        hashes.append([name, Markup(f"<code>{esc(sha)}</code>"), Markup(f"<code>{esc(fingerprint)}</code>")])
    if rows:
        header = ["split", "source", "records", "examples", "tokens", "trained tokens", "truncated", "dropped"]
        out.append(table(header, rows, numeric=range(2, 8)))
        out.append(table(["split", "file sha256", "content fingerprint (normalised examples)"], hashes))
    leak = leakage_text(run)
    if leak:
        out.append(f'<p>Leakage check: <span class="{leak[0]}">{esc(leak[1])}</span></p>')
    return out


def _hyperparameters(run: Run) -> list[str]:
    cfg = run.config
    if not cfg:
        return []
    rows = [[k, fmt_value(v)] for k, v in flatten({k: v for k, v in cfg.items() if k != "data"})]
    data = cfg.get("data") or {}
    rows += [[f"data.{k}", fmt_value(v)] for k, v in flatten(data) if k not in ("train", "validation")]
    half = (len(rows) + 1) // 2
    pairs = [[*rows[i], *(rows[i + half] if i + half < len(rows) else ["", ""])] for i in range(half)]
    return ["<h2>Hyperparameters</h2>", table(["setting", "value", "setting", "value"], pairs)]


def _environment(run: Run) -> list[str]:
    env = run.env
    if not env:
        return []
    rows = [[k, fmt_value(env[k])] for k in ("device", "cuda", "python", "platform") if env.get(k) is not None]
    libs = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    rows += [[name, version] for name, version in libs.items() if version]
    return ["<h2>Environment</h2>", table(["", "version / value"], rows)]


def _footer(run: Run) -> list[str]:
    missing = [name for name in FILES if name not in run.present]
    lines = [f"Built from {', '.join(run.present) or 'nothing'} in <code>{esc(run.path)}</code>."]
    for name in missing:
        how = _MAKES.get(name)
        lines.append(f"Not found: {esc(name)}" + (f" ({esc(how)})" if how else "") + ".")
    lines.append("Rebuild with <code>lmtune report RUN</code>.")
    return ['<p class="muted" style="margin-top:2rem">' + "<br>".join(lines) + "</p>"]
