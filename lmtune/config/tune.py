"""The `tune` section: what `lmtune tune` searches (config key paths mapped to distributions), the metric it
optimises, and Optuna's sampler, pruner and budget. A plain run ignores it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from lmtune.config.base import Section as _Section

KINDS = ("log_uniform", "uniform", "int", "log_int", "choice")
Scalar = str | int | float | bool | None


class Distribution(_Section):
    """One key's search range: exactly one of the fields, e.g. `{log_uniform: [1.0e-5, 1.0e-3]}`."""

    # `int` is the YAML key; the field is int_ so that the builtin stays usable in the annotations.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True)

    log_uniform: tuple[float, float] | None = Field(None, description="Floats, log scale: [low, high], low > 0.")
    uniform: tuple[float, float] | None = Field(None, description="Floats, linear scale: [low, high].")
    int_: tuple[int, int] | None = Field(None, alias="int", description="Integers from low to high (both included).")
    log_int: tuple[int, int] | None = Field(None, description="Integers, log scale: [low, high], low > 0.")
    choice: list[Scalar] | None = Field(None, description="One of the values listed (numbers, strings, booleans).")

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [k for k in KINDS if self.range_of(k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}, got {', '.join(given) or 'none'}")
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice: list at least one value")
            return self
        low, high = self.range_of(kind)
        if low > high:
            raise ValueError(f"{kind}: low {low} is above high {high}")
        if kind.startswith("log") and low <= 0:
            raise ValueError(f"{kind}: the low end must be > 0 on a log scale, got {low}")
        return self

    def range_of(self, kind: str) -> Any:
        return getattr(self, "int_" if kind == "int" else kind)

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if self.range_of(k) is not None)

    def values(self) -> list[Any]:
        """The values that stand for the whole range when the schema checks it: the ends, or every choice."""
        return list(self.choice) if self.choice is not None else list(self.range_of(self.kind))


class TuneConfig(_Section):
    metric: str = Field(
        "loss",
        description="Validation metric to optimise, any the task logs during training: loss or perplexity (every "
        "task), accuracy or f1 (classification, token_classification), accuracy or margin (reward, dpo).",
    )
    direction: Literal["auto", "minimize", "maximize"] = Field(
        "auto", description="'auto': minimize loss and perplexity, maximize the rest."
    )
    space: dict[str, Distribution] = Field(
        default_factory=dict,
        description="Config key paths (as for --set) mapped to distributions, e.g. `train.lr: {log_uniform: "
        "[1.0e-5, 1.0e-3]}`, `method.r: {choice: [4, 8, 16]}`, `train.epochs: {int: [1, 5]}`. Each path is checked "
        "against the config schema before the first trial. A method.* key that the sampled method.name lacks is "
        "left out of that trial.",
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="Optuna sampler: tpe (default), random, or grid (choice distributions only)."
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median",
        description="Optuna pruner: stop a trial whose validation metric falls behind the other trials' at the same "
        "amount of training data (median, hyperband), or none. Needs train.eval_every.",
    )
    n_trials: int = Field(20, gt=0, description="Trials in the study (all workers together, finished ones kept).")
    timeout: float | None = Field(None, gt=0, description="Stop starting trials after this many seconds.")
    startup_trials: int = Field(
        5, ge=0, description="Trials sampled at random before TPE models the space, and finished before pruning."
    )
    warmup_evals: int = Field(1, ge=0, description="Evaluations of a trial before the pruner may stop it.")
    start_trial: bool = Field(
        True,
        description="Run the config's own values as the first trial, the starting point the best trial is compared "
        "against.",
    )
    memory_limit_mb: float | None = Field(
        None,
        gt=0,
        description="Refuse (record as pruned) a trial whose `lmtune estimate` peak memory exceeds this; default: "
        "the machine's memory (the GPU's, or RAM on a CPU).",
    )
    keep_checkpoints: bool = Field(
        False, description="Keep each trial's checkpoints/ (its final/ model always stays); off saves disk."
    )

    @model_validator(mode="after")
    def _grid_needs_choices(self) -> TuneConfig:
        if self.sampler == "grid":
            ranged = [k for k, d in self.space.items() if d.choice is None]
            if ranged:
                raise ValueError(f"tune.sampler: grid searches choice lists only; {', '.join(ranged)} are ranges")
        return self
