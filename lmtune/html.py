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
.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin:1rem 0}.card{border:1px solid #ddd;border-radius:6px;
padding:.45rem .8rem;min-width:8.5rem}.card b{display:block;font-size:1.05rem}.card span{color:#666;font-size:12px}
.verdict{border-left:4px solid #4c72b0;background:#f3f6fb;padding:.5rem .8rem;margin:.6rem 0;font-weight:600}
.note{border-left:4px solid #9a6700;background:#fff8e6;padding:.4rem .8rem;margin:.5rem 0}
table.wide{width:100%;table-layout:fixed}table.wide td{white-space:pre-wrap;word-break:break-word}
.subtitle{color:#555;margin-top:0}hr.sep{border:0;border-top:1px dashed #ccc;margin:.3rem 0}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: Iterable[str]) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def table(
    header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = (), cls: str | None = None
) -> str:
    """An HTML table; cells are escaped unless they are already markup (wrapped in `Markup`).

    `cls="wide"` makes a full-width table with fixed columns whose cells keep line breaks (long texts)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            num = ' class="num"' if i in numeric else ""
            content = cell if isinstance(cell, Markup) else esc("" if cell is None else cell)
            cells.append(f"<td{num}>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cards(items: Iterable[tuple[str, object]]) -> str:
    """Headline figures as a row of small boxes: (label, value) pairs, both escaped."""
    boxes = "".join(f'<div class="card"><b>{esc(value)}</b><span>{esc(label)}</span></div>' for label, value in items)
    return f'<div class="cards">{boxes}</div>'


def image(png: bytes, alt: str) -> str:
    """A PNG inlined as a data URI, so the page stays one self-contained file."""
    from lmtune.plots import data_uri

    return f'<img alt="{esc(alt)}" src="{data_uri(png)}">'


class Markup(str):
    """Text that is already HTML (so `table` does not escape it)."""
