"""`lmtune data check --html`: the check report as one self-contained HTML page, with its plots inline."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lmtune.data.quality import CheckReport, length_percentiles
from lmtune.html import Markup, esc, page, table
from lmtune.plots import bar_chart, data_uri, length_histogram

MAX_ROWS = 500  # findings listed in the page; the JSON output has them all


def length_png(report: CheckReport) -> bytes:
    lengths = {name: split.lengths for name, split in report.splits.items()}
    return length_histogram(lengths, report.settings.get("max_length"))


def write_length_png(report: CheckReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(length_png(report))
    tmp.replace(path)
    return path


def render_html(report: CheckReport, title: str) -> str:
    d = report.as_dict()
    verdict = (
        Markup(f'<span class="error">{d["errors"]} errors</span>')
        if d["errors"]
        else Markup('<span class="ok">no errors</span>')
    )
    body = [
        f"<h1>Data check: {esc(title)}</h1>",
        f'<p>{verdict}, <span class="warning">{d["warnings"]} warnings</span> · model tokenizer '
        f"<code>{esc(report.settings.get('model'))}</code> · max_length {esc(report.settings.get('max_length'))}"
        f" · checked in {report.seconds:.1f} s</p>",
        "<h2>Splits</h2>",
        _splits_table(report),
        "<h2>Token lengths</h2>",
        f'<img alt="token length histogram" src="{data_uri(length_png(report))}">',
    ]
    for name, split in report.splits.items():
        if split.labels:
            body += [
                f"<h2>Labels ({esc(name)})</h2>",
                f'<img alt="labels" src="{data_uri(bar_chart(split.labels, name))}">',
            ]
        if split.roles:
            body.append(f"<p>{esc(name)} roles: {esc(split.roles)}; turns per conversation {esc(split.turns)}</p>")
    body += ["<h2>Template and EOS</h2>", _template_table(report), "<h2>Findings</h2>", _findings(report)]
    return page(f"lmtune data check: {title}", body)


def _splits_table(report: CheckReport) -> str:
    rows = []
    for name, s in report.splits.items():
        pct = length_percentiles(s.lengths)
        rows.append(
            [
                name,
                Markup(f"<code>{esc(s.source)}</code>"),
                s.format or "",
                s.records,
                s.examples,
                pct.get("p50", ""),
                pct.get("p95", ""),
                pct.get("max", ""),
                s.truncated,
                s.dropped,
                s.exact_duplicates,
                s.near_duplicates,
            ]
        )
    header = ["split", "source", "format", "records", "valid", "p50", "p95", "max", "truncated", "dropped"]
    return table([*header, "exact dup", "near dup"], rows, numeric=range(3, 12))


def _template_table(report: CheckReport) -> str:
    rows = [[k, Markup(f"<code>{esc(v)}</code>") if isinstance(v, str) else v] for k, v in report.template.items()]
    return table(["check", "value"], rows)


def _findings(report: CheckReport) -> str:
    if not report.findings:
        return '<p class="ok">Nothing found.</p>'
    counts = Counter((f.severity, f.check) for f in report.findings)
    summary = table(["severity", "check", "count"], [[s, c, n] for (s, c), n in sorted(counts.items())], numeric=[2])
    order = {"error": 0, "warning": 1, "info": 2}
    shown = sorted(report.findings, key=lambda f: order[f.severity])[:MAX_ROWS]
    rows = [
        [
            Markup(f'<span class="{f.severity}">{f.severity}</span>'),
            f.check,
            f.split or "",
            f.where,
            f.field or "",
            f.message,
        ]
        for f in shown
    ]
    more = len(report.findings) - len(shown)
    tail = f'<p class="muted">… and {more} more (see --json)</p>' if more > 0 else ""
    return summary + table(["severity", "check", "split", "where", "field", "problem"], rows) + tail
