"""The `forgetting` and `eval` sections: what is measured around training (general loss, generation metrics)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from lmtune.config.base import Section as _Section


class ForgettingConfig(_Section):
    measure: bool = Field(
        True,
        description="Measure catastrophic forgetting: the loss on a general reference text before training and "
        "after, reported in summary.json as a ratio (after / before).",
    )
    text: str = Field(
        "general",
        description="The reference text: a shipped sample ('general': everyday English prose; 'stories': simple "
        "children's stories, for story models such as stories260K) or the path of a UTF-8 text file.",
    )
    threshold: float = Field(
        1.1, gt=0.0, description="Warn when the general loss after training exceeds this multiple of the loss before."
    )
    max_tokens: int = Field(16384, gt=0, description="Score at most this many tokens of the text (keeps it cheap).")
    max_length: int | None = Field(
        None, gt=1, description="Tokens per scored chunk of the text (default: data.max_length)."
    )


class EvalConfig(_Section):
    run: bool = Field(
        False,
        description="At the end of training, score the tuned model on held-out data with generation metrics "
        "(as `lmtune eval RUN`) and put the results in the report. On when `data` is set.",
    )
    data: str | None = Field(
        None, description="Held-out data in the training data's shape; default: the run's validation split."
    )
    references: list[str] = Field(
        default_factory=list, description="Reference columns when there are several, e.g. [summary1, summary2]."
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="Metrics (rouge, bleu, chrf, exact_match, accuracy, f1, ...); default by data.",
    )
    baselines: list[str] = Field(
        default_factory=list,
        description="The base model prompted on the same data: zero-shot, few-shot:K, few-shot:K:retrieved.",
    )
    limit: int | None = Field(None, gt=0, description="Evaluate the first N examples only.")
    max_new_tokens: int = Field(128, gt=0, description="Most tokens generated per example.")

    @field_validator("data")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value

    @property
    def enabled(self) -> bool:
        return self.run or self.data is not None
