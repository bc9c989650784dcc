"""A few helpers for self-contained HTML reports: one file, inline CSS, images as data URIs, text escaped."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:13px}td,th{border:1px solid #ddd;padding:.3rem .55rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.error{color:#b00020;font-weight:600}.warning{color:#9a6700;font-weight:600}.info{color:#555}
.ok{color:#1a7f37;font-weight:600}.muted{color:#666}code,pre{font-family:ui-monospace,Menlo,monospace;
font-size:12px}pre{background:#f6f8fa;padding:.5rem;white-space:pre-wrap;word-break:break-word}
img{max-width:100%;border:1px solid #eee}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: Iterable[str]) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless they are already markup (wrapped in `Markup`)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            content = cell if isinstance(cell, Markup) else esc("" if cell is None else cell)
            cells.append(f"<td{cls}>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Markup(str):
    """Text that is already HTML (so `table` does not escape it)."""
