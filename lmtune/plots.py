"""Figures as PNG bytes (matplotlib, headless), for HTML reports that must stay self-contained files."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

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


Points = Sequence[tuple[float, float]]  # (step, value)


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's loss smoothing): per-batch losses are too noisy to read
    a trend from. Written out because it is three lines, and pandas' ewm would be a heavy import for it."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def smoothing_weight(n: int) -> float:
    """More points, more smoothing: about a tenth of the curve per EMA time constant, never over 0.98; a short
    curve is shown as it is (there is too little of it to average)."""
    return 0.0 if n < 20 else min(0.98, 1 - 10 / n)


def loss_curves(
    train: Points, validation: Points = (), lr: Points = (), mark: tuple[float, str] | None = None
) -> bytes:
    """Training loss per step (faint) and smoothed, validation loss points, one step marked (`mark`: step, label,
    e.g. the best evaluation); the learning rate below on a small panel sharing the step axis."""
    rows = 2 if lr else 1
    size = (_SIZE[0] * 1.35, 4.6 if lr else 3.6)
    ratios = {"height_ratios": [3, 1][:rows]}
    fig, axes = plt.subplots(rows, 1, figsize=size, sharex=True, squeeze=False, gridspec_kw=ratios)
    ax = axes[0][0]
    if train:
        steps, losses = zip(*train, strict=True)
        weight = smoothing_weight(len(losses))
        if weight:
            ax.plot(steps, losses, color="#4c72b0", alpha=0.25, linewidth=1, label="train (per step)")
            ax.plot(steps, ema(losses, weight), color="#4c72b0", linewidth=2, label="train (smoothed)")
        else:
            ax.plot(steps, losses, color="#4c72b0", linewidth=1.5, marker=".", label="train")
    if validation:
        steps, losses = zip(*validation, strict=True)
        ax.plot(steps, losses, color="#dd8452", marker="o", markersize=4, linewidth=1.5, label="validation")
    if mark is not None:
        ax.axvline(mark[0], color="#55a868", linestyle="--", linewidth=1, label=mark[1])
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    if lr:
        lax = axes[1][0]
        steps, rates = zip(*lr, strict=True)
        lax.plot(steps, rates, color="#8172b3", linewidth=1.5)
        lax.set_ylabel("learning rate", fontsize=9)
        lax.xaxis.set_major_locator(MaxNLocator(integer=True))
        lax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        lax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("optimizer step")
    return _png(fig)


def metric_curves(curves: Mapping[str, Points]) -> bytes:
    """One small panel per validation metric (they have different scales: points, fractions)."""
    names = list(curves)[:6]
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 0.6, 2.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        steps, values = zip(*curves[names[i]], strict=True)
        ax.plot(steps, values, color="#dd8452", marker="o", markersize=3, linewidth=1.5)
        ax.set_title(names[i], fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return _png(fig)


def named_curves(curves: Mapping[str, Points], ylabel: str) -> bytes:
    """Several curves on one axis, one per name (a mixture's sources, an rlhf run's reward functions)."""
    fig, ax = plt.subplots(figsize=_SIZE)
    for name, points in curves.items():
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, linewidth=1.5, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    return _png(fig)


def system_bars(values: Mapping[str, float], metric: str, highlight: str | None = None, digits: int = 2) -> bytes:
    """One metric across systems (baselines and the tuned model), the tuned one highlighted, values labelled with
    `digits` decimals (as the tables print them)."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(_SIZE[0], max(1.4, 0.45 * len(names) + 0.7)))
    colors = ["#dd8452" if n == highlight else "#8c8c8c" for n in names]
    bars = ax.barh(names[::-1], [values[n] for n in names][::-1], color=colors[::-1])
    ax.bar_label(bars, fmt=f"%.{digits}f", padding=3, fontsize=9)
    ax.set_xlabel(metric)
    ax.margins(x=0.15)
    if min(values.values(), default=0) >= 0:
        ax.set_xlim(left=0)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def before_after(before: float, after: float, label: str, warn: bool = False) -> bytes:
    """A general-text measure before and after fine-tuning (catastrophic forgetting): two bars, red on a warning."""
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    bars = ax.bar(["base model", "tuned model"], [before, after], color=["#8c8c8c", "#c44e52" if warn else "#55a868"])
    ax.bar_label(bars, fmt="%.4g", padding=2, fontsize=9)
    ax.set_ylabel(label)
    ax.set_title("general text", fontsize=10)
    ax.margins(y=0.18)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def figure_png(fig: plt.Figure) -> bytes:
    """A figure drawn elsewhere (Optuna's matplotlib plots) as PNG bytes for a self-contained page."""
    return _png(fig)


def overlaid_curves(panels: Mapping[str, Mapping[str, Points]]) -> bytes:
    """Several runs on shared axes, one panel per metric (`panels`: metric -> run -> points); training losses are
    smoothed as in the run report, so curves of different runs can be told apart."""
    names = [name for name, runs in panels.items() if any(runs.values())][:6]
    cols = min(2, max(len(names), 1))
    rows = max((len(names) + cols - 1) // cols, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols + 0.6, 3.0 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        for run, points in panels[names[i]].items():
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            weight = smoothing_weight(len(values))
            ax.plot(steps, ema(values, weight) if weight else values, linewidth=1.5, marker="" if weight else ".",
                    label=run)  # fmt: skip
        ax.set_title(names[i], fontsize=10)
        ax.set_xlabel("optimizer step", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    return _png(fig)
