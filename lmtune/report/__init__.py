"""`lmtune report RUN`: the run's evidence as report.html (self-contained, with plots) and a README.md model card.

Both are rebuilt from the files of the run directory alone (config, data fingerprints, metrics, summary, and
eval.json when `lmtune eval` has run), so a report can be written at the end of training, again after an
evaluation, or for a run made by an older lmtune. See lmtune/report/run.py for what is read, eval.json included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmtune.fileio import atomic_write_text
from lmtune.report.card import render_card
from lmtune.report.page import render_report
from lmtune.report.run import Run, read_run

REPORT = "report.html"
MODEL_CARD = "README.md"

__all__ = ["MODEL_CARD", "REPORT", "ReportPaths", "Run", "read_run", "render_card", "render_report", "write_report"]


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    model_card: Path


def write_report(run_dir: str | Path) -> ReportPaths:
    """Write report.html and README.md into the run directory (each atomically) and return their paths.

    Raises LmtuneError when `run_dir` is missing or is not a run directory, or when one of its files is corrupt.
    """
    run = read_run(run_dir)
    html = run.path / REPORT
    card = run.path / MODEL_CARD
    atomic_write_text(html, render_report(run))
    atomic_write_text(card, render_card(run))
    return ReportPaths(html, card)
