"""What a report shows, computed from a `Run`: curves, the baseline comparison, samples, forgetting, the
diagnosis, the method and data in words, and how numbers are written. Shared by report.html and the model card.

Every function is lenient like the reading (lmtune/report/run.py): a missing or malformed key gives an empty
answer, never an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmtune.evaluate.metrics import POINTS
from lmtune.report.run import TUNED, Run


@dataclass(frozen=True)
class ComparisonRow:
    baseline: str
    metric: str
    baseline_value: float
    tuned: float
    delta: float
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    confidence: float | None = None

    @property
    def interval(self) -> str:
        if self.low is None or self.high is None:
            return "–"
        return f"{fmt_metric(self.metric, self.low, '+')} .. {fmt_metric(self.metric, self.high, '+')}"

    def cells(self) -> list[str]:
        """baseline, metric, baseline value, tuned value, delta, interval: as the report and the card show them."""
        values = [fmt_metric(self.metric, v) for v in (self.baseline_value, self.tuned)]
        return [self.baseline, self.metric, *values, fmt_metric(self.metric, self.delta, "+"), self.interval]

    @property
    def outcome(self) -> str:
        """better / worse when the interval excludes zero, else tie (no interval: judged by the sign alone)."""
        if self.low is None or self.high is None:
            return "better" if self.delta > 0 else "worse" if self.delta < 0 else "tie"
        return "better" if self.low > 0 else "worse" if self.high < 0 else "tie"


@dataclass(frozen=True)
class Sample:
    input: str
    references: tuple[str, ...]
    outputs: dict[str, str]


# ------------------------------------------------------------------------------------ derived views


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing keys, strings, NaN written by a diverged run)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def series(run: Run, split: str, key: str) -> list[tuple[int, float]]:
    """(step, value) points of one key of one split in metrics.jsonl, in step order, last record per step winning
    (a resumed run may have logged a step twice before truncation existed)."""
    points: dict[int, float] = {}
    for r in run.metrics:
        step, value = r.get("step"), number(r.get(key))
        if r.get("split") == split and isinstance(step, int) and value is not None:
            points[step] = value
    return sorted(points.items())


# Keys of validation records that are not task metrics: bookkeeping, and perplexity (exp of the loss).
_NOT_METRICS = {"split", "step", "loss", "perplexity", "tokens", "epoch", "time", "tokens_per_s"}


def validation_metrics(run: Run) -> dict[str, list[tuple[int, float]]]:
    """Task metrics logged at validation time (beyond loss), each as its curve."""
    keys: list[str] = []
    for r in run.metrics:
        if r.get("split") == "validation":
            keys += [
                k
                for k, v in r.items()
                if k not in _NOT_METRICS and k not in keys and number(v) is not None and not k.startswith("loss/")
            ]
    return {k: pts for k in keys if len(pts := series(run, "validation", k)) > 0}


def per_name(run: Run, split: str, prefix: str) -> dict[str, list[tuple[int, float]]]:
    """Curves logged under `prefix/NAME` keys, by NAME: a mixture's validation loss per source (`loss/`), an
    rlhf run's reward per reward function (`reward/`)."""
    keys: list[str] = []
    for r in run.metrics:
        if r.get("split") == split:
            keys += [k for k in r if k.startswith(prefix) and k not in keys]
    return {k[len(prefix) :]: pts for k in keys if (pts := series(run, split, k))}


def system_metrics(run: Run) -> dict[str, dict[str, float]]:
    """eval.json "metrics": system -> metric -> value, numbers only, baselines first and the tuned model last."""
    raw = run.eval.get("metrics")
    if not isinstance(raw, Mapping):
        return {}
    if all(number(v) is not None for v in raw.values()):  # a flat {metric: value}: the tuned model's scores
        raw = {TUNED: raw}
    out = {
        str(name): {str(k): n for k, v in values.items() if (n := number(v)) is not None}
        for name, values in raw.items()
        if isinstance(values, Mapping)
    }
    return dict(sorted(out.items(), key=lambda kv: kv[0] == TUNED))


def comparison_rows(run: Run) -> list[ComparisonRow]:
    raw = run.eval.get("comparison")
    rows: list[ComparisonRow] = []
    if isinstance(raw, Mapping):  # {baseline: Comparison.to_dict()} or one Comparison.to_dict()
        comparisons = (
            # The key names the baseline (a Comparison's own "baseline" is the file its predictions came from).
            [raw] if "deltas" in raw else [{**v, "baseline": k} for k, v in raw.items() if isinstance(v, dict)]
        )
        raw = [
            {
                "baseline": c.get("baseline"),
                "metric": m,
                "baseline_value": d.get("value_a"),
                "tuned": d.get("value_b"),
                **{k: d.get(k) for k in ("delta", "low", "high", "p_value", "confidence")},
            }
            for c in comparisons
            for m, d in (c.get("deltas") or {}).items()
            if isinstance(d, Mapping)
        ]
    if not isinstance(raw, list):
        return rows
    for r in raw:
        if not isinstance(r, Mapping):
            continue
        base = number(r.get("baseline_value", r.get("value_a")))  # Delta.to_dict(): a = baseline, b = tuned
        tuned = number(r.get("tuned", r.get("value_b")))
        if base is None or tuned is None or r.get("metric") is None:
            continue
        delta = number(r.get("delta"))
        rows.append(
            ComparisonRow(
                baseline=str(r.get("baseline", "baseline")),
                metric=str(r["metric"]),
                baseline_value=base,
                tuned=tuned,
                delta=tuned - base if delta is None else delta,
                low=number(r.get("low")),
                high=number(r.get("high")),
                p_value=number(r.get("p_value")),
                confidence=number(r.get("confidence")),
            )
        )
    return rows


def verdicts(run: Run) -> list[str]:
    raw = run.eval.get("verdict")
    lines = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [str(line) for line in lines if str(line).strip()]


def samples(run: Run) -> list[Sample]:
    raw = run.eval.get("samples")
    out = []
    for s in raw if isinstance(raw, list) else []:
        if not isinstance(s, Mapping):
            continue
        refs = s.get("references", s.get("reference", ()))
        refs = (refs,) if isinstance(refs, str) else tuple(as_text(r) for r in refs or ())
        outputs = s.get("outputs")
        outputs = {str(k): as_text(v) for k, v in outputs.items()} if isinstance(outputs, Mapping) else {}
        out.append(Sample(as_text(s.get("input", "")), refs, outputs))
    return out


def as_text(value: Any) -> str:
    """Sample fields as text: strings as they are, chat messages as `role: content` lines, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, Mapping) and "content" in m for m in value):
        return "\n".join(f"{m.get('role', '?')}: {m['content']}" for m in value)
    return json.dumps(value, ensure_ascii=False)


def forgetting(run: Run) -> dict[str, Any] | None:
    """The forgetting check: eval.json's (the later, explicit measurement) over summary.json's."""
    for source in (run.eval, run.summary):
        f = source.get("forgetting")
        if isinstance(f, Mapping) and isinstance(f.get("before"), Mapping) and isinstance(f.get("after"), Mapping):
            return dict(f)
    return None


def diagnosis(run: Run) -> tuple[list[dict[str, str]], bool]:
    """(findings, recorded): the run's recorded diagnosis, or one computed here from metrics.jsonl for runs
    written before diagnosis was recorded (recorded=False). No curves: no findings."""
    recorded = run.summary.get("diagnosis")
    if isinstance(recorded, list):
        return [
            {k: str(d.get(k, "")) for k in ("kind", "message", "advice")} for d in recorded if isinstance(d, dict)
        ], True
    if not run.metrics:
        return [], False
    from lmtune.evaluate.diagnose import diagnose

    return [f.as_dict() for f in diagnose(run.metrics)], False


def flatten(section: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested config sections as dotted keys (`train.lr`), unset (null) values left out."""
    if not isinstance(section, Mapping):
        return [(prefix, section)] if section is not None else []
    out: list[tuple[str, Any]] = []
    for key, value in section.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out += flatten(value, name)
        elif value is not None and value != {} and value != []:
            out.append((name, value))
    return out


def method_text(run: Run) -> str:
    """The method in words with its main settings: `LoRA (r=16, alpha=32, dropout=0.05, targets all-linear)`."""
    m = run.method
    name = m.get("name")
    if name == "lora":
        targets = m.get("target_modules")
        targets = ", ".join(targets) if isinstance(targets, list) else targets
        parts = [f"{k}={fmt_value(m[k])}" for k in ("r", "alpha", "dropout") if k in m]
        parts += [f"targets {targets}"] if targets else []
        parts += [f"also trains {', '.join(m['modules_to_save'])}"] if m.get("modules_to_save") else []
        return f"LoRA ({', '.join(parts)})" if parts else "LoRA"
    if name == "freeze":
        extra = f", plus {', '.join(m['train_modules'])}" if m.get("train_modules") else ""
        return f"partial fine-tuning (last {m.get('train_last_layers', '?')} blocks trained{extra})"
    if name == "full":
        return "full fine-tuning"
    return str(name or "unknown method")


def trainable_text(run: Run) -> str | None:
    trainable, total = run.summary.get("trainable_parameters"), run.summary.get("total_parameters")
    if not isinstance(trainable, int) or not isinstance(total, int) or not total:
        return None
    return f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"


def splits(run: Run) -> dict[str, dict[str, Any]]:
    raw = run.data.get("splits")
    return {str(k): v for k, v in raw.items() if isinstance(v, Mapping)} if isinstance(raw, Mapping) else {}


def example_count(run: Run, split: str) -> tuple[int | None, int]:
    """(examples the split really used, examples dropped for length): tokenization may drop overlong ones
    (data.overlong: drop), so the kept count is the honest one where the run recorded it."""
    info = splits(run).get(split, {})
    tokens = info.get("tokens") if isinstance(info.get("tokens"), Mapping) else {}
    n = tokens.get("kept", info.get("examples"))
    dropped = tokens.get("dropped")
    return (n if isinstance(n, int) else None), (dropped if isinstance(dropped, int) else 0)


def leakage_text(run: Run) -> tuple[str, str] | None:
    """(severity, sentence) about the pre-training leakage check, or None when the run did not record it."""
    leak = run.data.get("leakage")
    if not isinstance(leak, Mapping):
        return None
    if not leak.get("checked"):
        return "info", "validation was not checked for leakage from train (data.leakage: off, or no validation)"
    n = leak.get("leaked_examples") or 0
    if not n:
        return "ok", "no validation example also appears in train (exact match after normalising)"
    kinds = leak.get("kinds") or {}
    how = f" ({', '.join(f'{k}: {v}' for k, v in kinds.items())})" if kinds else ""
    examples = "example also appears" if n == 1 else "examples also appear"
    return "warning", f"{n} validation {examples} in train{how}: the validation loss overstates how well the model " + (
        "generalises"
    )


def is_chat(run: Run) -> bool:
    """Whether prompts go through the chat template (as data.json records; else guessed from the config)."""
    if isinstance(run.data.get("chat"), bool):
        return run.data["chat"]
    data = run.config.get("data") or {}
    return data.get("template") == "chat" or (
        data.get("template") in (None, "auto") and data.get("format") == "messages"
    )


def headline_metric(keys: list[str]) -> str | None:
    """The metric a verdict is about: ROUGE-L for text, macro F1 for labels, else the first one."""
    for preferred in ("rougeL", "f1", "accuracy"):
        if preferred in keys:
            return preferred
    return keys[0] if keys else None


def forgetting_warning(f: Mapping[str, Any]) -> str | None:
    """The forgetting warning as a sentence (a recorded string, or one made from a true flag), else None."""
    warning = f.get("warning")
    if isinstance(warning, str) and warning.strip():
        return warning
    if warning is True:
        ratio, limit = number(f.get("ratio")), number(f.get("threshold"))
        what = f"general-text {f.get('ratio_of', 'loss')} rose ×{ratio:.3f}" if ratio is not None else "forgetting"
        tail = f", above the threshold ×{limit:g}" if limit is not None else ""
        return (
            f"{what}{tail}: the model lost some general ability. Mix general text into training (data.replay), pull "
            "the weights toward the base (train.l2sp), use LoRA instead of full fine-tuning, or train fewer steps"
        )
    return None


def kept_step(summary: Mapping[str, Any]) -> tuple[int | None, bool]:
    """(step, early): the step whose weights final/ holds when early stopping chose them (early=True), else the
    step of the best validation loss (early=False), or None."""
    if summary.get("early_stopping") or summary.get("stopped_early"):
        step = summary.get("final_step", summary.get("best_step"))
        if isinstance(step, int):
            return step, True
    step = summary.get("best_val_step")
    return (step, False) if isinstance(step, int) else (None, False)


# ------------------------------------------------------------------------------------------ formatting


def fmt_metric(key: str, value: float | None, sign: str = "") -> str:
    """Points (BLEU, chrF, ROUGE) and perplexity with 2 decimals, fractions and losses with 4."""
    if value is None:
        return "–"
    digits = 2 if key in POINTS or "perplexity" in key else 4
    return f"{value:{sign}.{digits}f}"


def fmt_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value)
    return str(value)


def fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
