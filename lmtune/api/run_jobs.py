"""The jobs over a finished run as API functions: generate from it, score predictions files, write its report.
Each is one call, done by the stage that owns the work (evaluate, report)."""

from __future__ import annotations

from lmtune.evaluate.generate import generate, read_messages
from lmtune.evaluate.metrics import POINTS
from lmtune.evaluate.predictions import score_predictions
from lmtune.report import write_report

__all__ = ["POINTS", "generate", "read_messages", "score_predictions", "write_report"]
