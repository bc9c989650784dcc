"""What each task asks of the rest of the config, as data: the cross-field checks of `RunConfig` read these rules
instead of comparing task names. The task registry (`lmtune.tasks`) holds everything else about a task; these
rules live here because the config imports nothing of lmtune (a config error must not load torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TaskRules:
    records: Literal["examples", "pairs", "prompts"] = "examples"
    # The data.format the task reads, and what to say when another is set (None: any shape of examples).
    data_format: str | None = None
    format_hint: str = ""
    # Formats (and the chat template) the task cannot train on, and why.
    refused_formats: tuple[str, ...] = ()
    refuses_chat: bool = False
    refused_hint: str = ""
    # Tasks whose example is one unit (one label, one encoder input): nothing to pack, chunk or replay.
    one_unit: str | None = None  # e.g. "one label each"
    unit_kind: str = ""  # how the messages name the task family ("classification", "seq2seq")
    chunk_hint: str = ""
    # data.overlong: chunk applies (token_classification: overlapping windows, each word trained once); when set,
    # the task's default `overlong`.
    chunks: bool = False
    class_weights: bool = False  # train.class_weights applies
    trained_by_loop: bool = True  # early stopping and L2-SP apply
    needs_reward_model: bool = False
    batch_counts_generations: bool = False  # train.batch_size counts sampled answers (a multiple of num_generations)


_CLASSIFIER = dict(one_unit="one label each", unit_kind="classification", class_weights=True,
                   chunk_hint="data.overlong: chunk would give one label to several pieces; use truncate or drop")  # fmt: skip

TASK_RULES: dict[str, TaskRules] = {
    "sft": TaskRules(),
    "causal_lm": TaskRules(
        data_format="text",
        format_hint="task causal_lm trains on raw text: set data.format: text (records with a text field)",
    ),
    "seq2seq": TaskRules(
        refused_formats=("text", "messages"),
        refuses_chat=True,
        refused_hint="task seq2seq trains on prompt/completion or instruction data (the encoder reads the prompt, the "
        "decoder writes the completion); chat data and raw text are not supported for seq2seq yet: set data.format "
        "to prompt_completion or instruction and data.template to auto or raw",
        one_unit="one encoder input each",
        unit_kind="seq2seq",
        chunk_hint="data.overlong: chunk cuts raw text; for seq2seq use truncate or drop",
    ),
    "classification": TaskRules(
        data_format="classification",
        format_hint="task classification reads records with a text and a label field: set data.format: "
        "classification (the default for this task) and map your columns with data.columns, e.g. {text: sentence}",
        **_CLASSIFIER,
    ),
    "token_classification": TaskRules(
        data_format="token_classification",
        format_hint="task token_classification reads sentences of tokens and tags (a CoNLL file, or records with "
        "tokens and tags lists): set data.format: token_classification (the default for this task)",
        **{**_CLASSIFIER, "chunks": True},
    ),
    "reward": TaskRules(records="pairs"),
    "dpo": TaskRules(records="pairs"),
    "rlhf": TaskRules(records="prompts", trained_by_loop=False, needs_reward_model=True, batch_counts_generations=True),
}

# Training types that learn from preferences: their data are preference pairs or prompts, not record shapes.
ALIGNMENT_TASKS = tuple(name for name, rules in TASK_RULES.items() if rules.records != "examples")
