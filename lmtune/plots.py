"""Figures as PNG bytes (matplotlib, headless), for HTML reports that must stay self-contained files."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
import matplotlib.pyplot as plt

_SIZE = (6.4, 3.2)


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def length_histogram(lengths_by_split: Mapping[str, Sequence[int]], max_length: int | None = None) -> bytes:
    """Token lengths per split, with the configured max_length marked (what lies right of it is cut)."""
    fig, ax = plt.subplots(figsize=_SIZE)
    longest = max((max(v) for v in lengths_by_split.values() if v), default=1)
    bins = min(60, max(10, longest // 8))
    for name, lengths in lengths_by_split.items():
        if lengths:
            ax.hist(lengths, bins=bins, range=(0, longest), alpha=0.6, label=f"{name} ({len(lengths)})")
    if max_length is not None:
        ax.axvline(max_length, color="crimson", linestyle="--", label=f"max_length {max_length}")
    ax.set_xlabel("tokens per example (as training renders it)")
    ax.set_ylabel("examples")
    ax.legend(frameon=False)
    return _png(fig)


def bar_chart(counts: Mapping[str, int], title: str, xlabel: str = "") -> bytes:
    fig, ax = plt.subplots(figsize=(_SIZE[0], max(1.6, 0.35 * len(counts) + 0.8)))
    names = list(counts)[:30]
    ax.barh(names[::-1], [counts[n] for n in names][::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig)
