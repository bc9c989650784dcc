"""The run configuration: one YAML file validated once into a frozen, typed `RunConfig`.

`RunConfig` gathers the sections (`model`, `data`, `train`, `evaluation`, `alignment`, `methods`), each a field with
its doc string; the CLI's `--set`, `lmtune config docs`, the README and the saved run all read them from there. The
checks that span sections (those that depend on `task`) live here. Nothing of lmtune is imported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lmtune.config.alignment import PreferenceConfig, RlhfConfig
from lmtune.config.base import Section as _Section
from lmtune.config.data import DataConfig
from lmtune.config.evaluation import EvalConfig, ForgettingConfig
from lmtune.config.methods import (
    LoraMethod,
    MethodConfig,
)
from lmtune.config.model import ModelConfig
from lmtune.config.tasks import TASK_RULES, TaskRules
from lmtune.config.train import TrainConfig
from lmtune.config.tune import TuneConfig

# The training types (`task:`), described in RunConfig.task.
Task = Literal["sft", "causal_lm", "seq2seq", "classification", "token_classification", "reward", "dpo", "rlhf"]


class RunConfig(_Section):
    name: str = Field("run", description="Run name; the run directory is output_dir or runs/<name>.")
    task: Task = Field(
        "sft",
        description="Training type: 'sft' (prompt/completion, chat, instruction data: the answers are trained), "
        "'causal_lm' (domain adaptation / continued pretraining on raw text: every token is trained, long documents "
        "are cut into max_length chunks instead of truncated, and chunks are packed into full rows) or 'seq2seq' "
        "(an encoder-decoder model such as T5 or BART on prompt/completion or instruction data: the encoder reads "
        "the prompt, the decoder is trained on the completion; max_length applies to each side) or 'classification' "
        "(a text and its label, e.g. sentiment: a classification head on an encoder such as BERT/MiniLM or on a "
        "decoder; records with a text and a label field, the label set read from the training data) or "
        "'token_classification' (NER: a tag per word, BIO tags, CoNLL files or tokens + tags records; a token "
        "classification head, scored by entity-level F1 with seqeval). Preference "
        "alignment: 'reward' (a reward model, one score per text, trained on preference pairs: prompt, "
        "chosen, rejected, or Anthropic-HH transcripts), 'dpo' (direct preference optimisation of a causal LM on the "
        "same pairs, see `preference`) or 'rlhf' (online GRPO/RLOO of a causal LM on prompts against a trained "
        "reward model through trl, see `rlhf`).",
    )
    seed: int = Field(42, description="Seed for data order, splits, initialisation and dropout.")
    output_dir: str | None = Field(None, description="Run directory (default runs/<name>).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    method: MethodConfig = Field(
        default_factory=LoraMethod,
        description="Fine-tuning method: full, freeze, lora, dora, qlora, ia3, prompt_tuning, prefix_tuning or adapters.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    rlhf: RlhfConfig = Field(default_factory=RlhfConfig)
    tune: TuneConfig | None = Field(
        None, description="Hyperparameter search for `lmtune tune` (Optuna); a plain `lmtune train` ignores it."
    )

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, values: Any) -> Any:
        # Continued pretraining wants every token of long documents, in full rows: chunk and pack unless told not to.
        if isinstance(values, dict) and values.get("task") == "causal_lm" and isinstance(values.get("data"), dict):
            values = {**values, "data": {"overlong": "chunk", "packing": True, "format": "text", **values["data"]}}
        classifier = isinstance(values, dict) and values.get("task") in ("classification", "token_classification")
        if classifier and isinstance(values.get("data"), dict):
            values = {**values, "data": {"format": values["task"], **values["data"]}}
            if TASK_RULES[values["task"]].chunks:  # long sentences: every word trained, in overlapping windows
                values["data"] = {"overlong": "chunk", **values["data"]}
        return values

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        # `method: lora` is the common case; expand it to the section with defaults. A section without a name
        # (`method: {r: 8}`, or `--set method.r=8` on a config that has no method section) is the default, lora.
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "name" not in value:
            return {"name": "lora", **value}
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if not re.fullmatch(r"[\w.-]+", self.name):
            raise ValueError(f"name: use letters, digits, '.', '-' or '_' only, got {self.name!r}")
        if self.train.early_stopping is not None and self.data.validation is None and self.data.val_fraction == 0:
            raise ValueError(
                "train.early_stopping: needs validation data to watch; set data.validation, or data.val_fraction "
                "above 0"
            )
        rules = TASK_RULES[self.task]
        self._source_checks(rules)
        if rules.records != "examples":
            self._alignment_checks(rules)
            return self
        self._task_checks(rules)
        if self.data.overlong == "chunk" and self.data.format not in ("text", "auto") and not rules.chunks:
            raise ValueError(
                f"data.overlong: chunk cuts raw text into pieces; {self.data.format} data would lose its "
                "prompt/answer structure (use truncate or drop)"
            )
        if self.data.packing and self.method.name in ("prompt_tuning", "prefix_tuning"):
            raise ValueError(
                f"data.packing: method {self.method.name} prepends virtual tokens that every packed example would "
                "share, and peft drops the position ids packing relies on; set data.packing: false"
            )
        return self

    def _source_checks(self, rules: TaskRules) -> None:
        """Mixtures and streaming read examples (not pairs or prompts); a stream has no length to count steps by."""
        for name, used in (
            ("data.train as a list of sources", self.data.mixture),
            ("data.streaming", self.data.streaming),
        ):
            if used and rules.records != "examples":
                raise ValueError(f"{name}: task {self.task} reads {rules.records}, from one source in memory")
        for src in self.data.train if isinstance(self.data.train, list) else []:
            if src.format is None:
                continue
            if rules.data_format is not None and src.format != rules.data_format:
                raise ValueError(f"data.train source {src.label}: {rules.format_hint}")
            if self.data.overlong == "chunk" and src.format != "text":
                raise ValueError(f"data.overlong: chunk cuts raw text; source {src.label} holds {src.format} data")
        if self.data.streaming:
            if rules.class_weights:
                raise ValueError(f"data.streaming: task {self.task} reads its label set from the whole training data")
            if self.train.max_steps is None:
                raise ValueError("data.streaming: a stream has no length to count epochs by; set train.max_steps")
            for name, used in (
                ("data.replay", self.data.replay is not None),
                ("data.max_examples", self.data.max_examples is not None),
            ):
                if used:
                    raise ValueError(f"{name}: not supported with data.streaming; unset it")

    def _alignment_checks(self, rules: TaskRules) -> None:
        """Preference tasks read their own record shapes (pairs, or prompts for rlhf, which trains through trl)."""
        shape = (
            "prompts (a prompt field)" if rules.records == "prompts" else "preference pairs (prompt, chosen, rejected)"
        )
        if self.data.format != "auto":
            raise ValueError(f"data.format: task {self.task} reads {shape}; leave data.format unset (auto)")
        unsupported = [
            ("data.packing", self.data.packing),
            ("data.replay", self.data.replay is not None),
            ("data.overlong: chunk", self.data.overlong == "chunk"),
            ("train.early_stopping", not rules.trained_by_loop and self.train.early_stopping is not None),
            ("train.l2sp", not rules.trained_by_loop and self.train.l2sp > 0),
            ("train.label_smoothing", self.train.label_smoothing > 0),
            ("train.class_weights", self.train.class_weights != "none"),
            ("eval (generation metrics)", self.eval.enabled),
        ]
        for name, used in unsupported:
            if used:
                raise ValueError(f"{name}: not supported for task {self.task}; unset it")
        if rules.needs_reward_model and self.rlhf.reward_model is None and not self.rlhf.rewards:
            raise ValueError(
                f"rlhf.reward_model: task {self.task} needs a reward model (the run directory of a `task: reward` run) "
                "or reward functions (rlhf.rewards)"
            )
        if rules.batch_counts_generations and self.train.batch_size % self.rlhf.num_generations:
            raise ValueError(
                f"train.batch_size: counts sampled answers and must be a multiple of rlhf.num_generations "
                f"({self.rlhf.num_generations}), got {self.train.batch_size}"
            )

    def _task_checks(self, rules: TaskRules) -> None:
        """What the task's examples allow: their record shape, and (one label or one encoder input each) no
        packing, chunking or replay."""
        if rules.data_format is not None and self.data.format != rules.data_format:
            raise ValueError(rules.format_hint)
        if self.data.format in rules.refused_formats or (rules.refuses_chat and self.data.template == "chat"):
            raise ValueError(rules.refused_hint)
        if rules.data_format is None and self.data.format in ("classification", "token_classification"):
            raise ValueError(f"data.format: {self.data.format} data is for task {self.data.format}, not {self.task}")
        if not rules.class_weights and self.train.class_weights != "none":
            raise ValueError("train.class_weights: applies to task classification only (and token_classification)")
        if rules.one_unit is None:
            return
        if self.data.packing:
            raise ValueError(
                f"data.packing: {rules.unit_kind} examples are not packed ({rules.one_unit}); set packing: false"
            )
        if self.data.overlong == "chunk" and not rules.chunks:
            raise ValueError(rules.chunk_hint)
        if self.data.replay is not None:
            raise ValueError(
                f"data.replay mixes general text into causal-LM training; unset it for task {rules.unit_kind}"
            )

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name


# What the API accepts as a config: a YAML path, a dict of sections, or a RunConfig.
ConfigLike = str | Path | dict[str, Any] | RunConfig
