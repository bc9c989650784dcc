"""What a task entry holds (`Task`), and the pieces entries share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from transformers import PreTrainedTokenizerBase

from lmtune.data.formats import Example
from lmtune.data.types import Tokenized, TokenStats

if TYPE_CHECKING:  # the registry is read by commands that train nothing (data check): torch stays unloaded
    from lmtune.train.objectives import Objective
    from lmtune.train.validation import Scorer

# Which model class `lmtune.model.load_model` builds for a task.
ModelKind = Literal["causal", "seq2seq", "classifier", "token_classifier", "reward"]

# What a task's records are: examples for the loop, preference pairs, or prompts for trl's RL trainers.
RecordKind = Literal["examples", "pairs", "prompts"]

# The methods of `lmtune.methods.METHODS`, grouped by the model kinds they work on.
CAUSAL_METHODS = frozenset(
    {"full", "freeze", "lora", "dora", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "adapters"}
)
MODEL_METHODS = frozenset({"full", "freeze", "lora", "dora"})  # those that fit every model class


@dataclass(frozen=True)
class TokenizeOptions:
    """The data settings tokenization reads (from `data:`), and the task's label names where it has them."""

    max_length: int
    overlong: str = "truncate"
    template: str = "auto"
    labels: Sequence[str] = ()
    chat: bool = False  # preference pairs: render through the chat template


Tokenize = Callable[[Sequence[Example], PreTrainedTokenizerBase, TokenizeOptions], tuple[list[Tokenized], TokenStats]]


@dataclass(frozen=True)
class Task:
    name: str
    summary: str  # what it trains, in words (README, `lmtune config docs`)
    model: ModelKind
    methods: frozenset[str]
    # The loss: an entry of lmtune.train.objectives.OBJECTIVES (None: set per run, or trained outside the loop).
    objective_name: str | None
    tokenize: Tokenize | None = None  # None: the task's records are not examples (pairs, prompts)
    records: RecordKind = "examples"
    labels: Callable[[Sequence[Example]], list[str]] | None = None  # the label set, read from the training data
    scorer: Callable[[dict[int, str]], Scorer] | None = None  # validation metrics beyond the loss (id2label)
    # Why the general-text forgetting measurement does not apply (None: it is measured): it scores next-token
    # prediction, which only a causal LM does.
    forgetting_note: str | None = None
    renders_text: bool = True  # `data preview` can show a prompt and the answer tokens trained on
    predicts_with_head: bool = False  # evaluated by its trained head (no generation, no prompted baselines)
    class_weights: bool = False  # train.class_weights applies (a label per example or per word)
    summary_metrics: tuple[str, ...] = ()  # validation metrics summary.json reports before/after/final
    # The validation metric that picks the best weights and that early stopping watches (train.best_metric: auto).
    best_metric: str = "loss"
    # What the loop counts and normalises the loss by (summary.json's trained_tokens, the tokens/s shown).
    unit: Literal["tokens", "examples", "words", "pairs"] = "tokens"
    # The objective of a run when it depends on the config and the model (preference losses: beta, loss type,
    # how the reference is computed); `objective` is used otherwise.
    objective_for_run: Callable[[Any, Any], Objective] | None = None
    # What summary.json adds for this task, and the line the run ends with: (cfg, model, summary) -> (extra, line).
    summary_extra: Callable[[Any, Any, dict[str, Any]], tuple[dict[str, Any], str | None]] | None = None

    @property
    def objective(self) -> Objective | None:
        """The loss, looked up on use: the objectives import torch, which the data commands never need."""
        if self.objective_name is None:
            return None
        from lmtune.train.objectives import OBJECTIVES

        return OBJECTIVES[self.objective_name]

    def loop_trained(self) -> bool:
        """Whether lmtune's loop trains this task: every task but RL, which samples answers through trl."""
        return self.records != "prompts"


def not_measured(task: str, model: str) -> str:
    return f"not measured: the general-text loss is a causal-LM measurement and task {task} trains {model}"
