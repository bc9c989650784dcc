"""What a report reads from a run directory, read leniently: every file and key is optional.

Runs written by older versions of lmtune (or runs that crashed half way) must still get a report, so nothing here
validates against today's `RunConfig`: config.yaml is read as plain YAML and every section of the report asks for
the keys it needs and is left out when they are missing.

The files (see lmtune/rundir.py for the layout): config.yaml, data.json, env.json, metrics.jsonl, summary.json,
final/ (and base_model/ for LoRA on a preset), and eval.json, written by `lmtune eval RUN`.

eval.json, as `lmtune eval RUN` writes it (lmtune/api/evaluate.py) and as read here (every key optional)::

    {
      "data": {"source": "test.jsonl", "examples": 500, "references_per_example": 3},   # the evaluated set
      "metrics": {"tuned": {"rougeL": 41.2, ...},                    # system -> metric -> value; the tuned model
                  "zero-shot": {...}, "3-shot (retrieved)": {...}},  # is "tuned", baselines any other name
      "comparison": [{"baseline": "3-shot (retrieved)", "metric": "rougeL",
                      "value_a": 35.0, "value_b": 41.2,              # baseline, tuned ("baseline_value", "tuned"
                      "delta": 6.2, "low": 3.1, "high": 9.0,         # are read too); tuned minus baseline with its
                      "p_value": 0.001, "confidence": 0.95}],        # paired-bootstrap interval
      "verdict": "fine-tuning beats 3-shot (retrieved) prompting by +6.20 rougeL [95% CI +3.10..+9.00]",
      "samples": [{"input": "...", "reference": ["...", ...] (or one string, or "references"),
                   "outputs": {"zero-shot": "...", "tuned": "..."}}],
      "forgetting": {...}                                            # as in summary.json (this one wins)
    }

summary.json's "forgetting" (lmtune/evaluate/forgetting.py forgetting_report): {"text", "file", "before": {"loss",
"perplexity", "tokens"}, "after": {...}, "ratio", "ratio_of", "perplexity_ratio", "threshold", "warning": bool or a
sentence}. Metric values use the scales of lmtune.evaluate.metrics: BLEU/chrF/ROUGE in points (0-100), the rest
fractions. "comparison" may also be ``{baseline: Comparison.to_dict()}`` (lmtune.evaluate.predictions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmtune.errors import LmtuneError

TUNED = "tuned"
FILES = ("config.yaml", "data.json", "env.json", "metrics.jsonl", "summary.json", "eval.json")


@dataclass(frozen=True)
class Run:
    """The files of one run directory, as plain data ({} or [] for what is missing)."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    bad_metric_lines: int = 0  # unreadable lines of metrics.jsonl (a crash can cut the last one short)
    present: tuple[str, ...] = ()  # which of FILES exist

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def model(self) -> str | None:
        return (self.config.get("model") or {}).get("name")

    @property
    def method(self) -> dict[str, Any]:
        return self.config.get("method") or {}

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def adapter(self) -> bool:
        return (self.final / "adapter_config.json").is_file() or self.method.get("name") == "lora"

    @property
    def base_copy(self) -> bool:
        return (self.path / "base_model").is_dir()


def read_run(run_dir: str | Path) -> Run:
    """Read whatever the run directory holds; raise when it is not a run directory at all."""
    path = Path(run_dir)
    if not path.is_dir():
        raise LmtuneError(f"run directory {path} not found", hint="pass a run directory, e.g. runs/<name>")
    present = tuple(name for name in FILES if (path / name).is_file())
    if not {"config.yaml", "summary.json", "metrics.jsonl"} & set(present):
        raise LmtuneError(
            f"{path} is not a run directory (no config.yaml, summary.json or metrics.jsonl)",
            hint="pass the directory `lmtune train` wrote, e.g. runs/<name>",
        )
    metrics, bad = _read_metrics(path / "metrics.jsonl")
    return Run(
        path=path,
        config=_read_yaml(path / "config.yaml"),
        data=_read_json(path / "data.json"),
        env=_read_json(path / "env.json"),
        summary=_read_json(path / "summary.json"),
        eval=_read_json(path / "eval.json"),
        metrics=metrics,
        bad_metric_lines=bad,
        present=present,
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LmtuneError(f"{path}: cannot read it as JSON: {e}", hint="restore the file or delete it") from None
    if not isinstance(value, dict):
        raise LmtuneError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise LmtuneError(f"{path}: cannot read it as YAML: {e}", hint="restore the file or delete it") from None
    return value if isinstance(value, dict) else {}


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, bad
