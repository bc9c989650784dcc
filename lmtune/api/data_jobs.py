"""The data jobs of `lmtune data ...` as API functions: each one call over files, done by the data stage that owns
the work (split, dedup, leakage, redaction), and the files a data check writes beside its report.

Kept apart from the training jobs so that these commands never load torch.
"""

from __future__ import annotations

from pathlib import Path

from lmtune.data.augment_strategies import AugmentOptions
from lmtune.data.dedup import dedup_file
from lmtune.data.leakage import leakage_report
from lmtune.data.pii import redact_file
from lmtune.data.quality import CheckReport, length_percentiles
from lmtune.data.split import split_file
from lmtune.fileio import atomic_write_text

__all__ = [
    "AugmentOptions",
    "dedup_file",
    "leakage_report",
    "length_percentiles",
    "redact_file",
    "split_file",
    "write_check_files",
]


def write_check_files(report: CheckReport, source: str, html: Path | None, plot: Path | None) -> list[Path]:
    """The data check's self-contained HTML report and its token-length histogram, where asked; the paths written."""
    written: list[Path] = []
    if html is None and plot is None:
        return written
    # Here, not at the top: the report draws with matplotlib, which a check that writes no file never needs.
    from lmtune.data.check_report import render_html, write_length_png

    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(html, render_html(report, source))
        written.append(html)
    if plot is not None:
        write_length_png(report, plot)
        written.append(plot)
    return written
