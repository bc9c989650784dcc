"""The `data` section: where the examples come from, their shape and length, leakage and replay."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lmtune.config.base import Section as _Section


class ReplayConfig(_Section):
    source: str = Field(
        "general",
        description="General text mixed into training against catastrophic forgetting: a shipped sample "
        "('general': everyday English prose on science, history, cooking, travel; 'stories': simple children's "
        "stories) or the path of a UTF-8 text file. Its paragraphs (blank-line separated) become raw-text examples "
        "trained on every token. Replay is off unless data.replay is set (`replay: {}` takes the defaults).",
    )
    fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of the training examples that are replay text (0.1: one in ten)."
    )


Format = Literal[
    "auto", "text", "prompt_completion", "messages", "sharegpt", "instruction", "classification", "token_classification"
]


class DataSource(_Section):
    """One source of a mixture (`data.train` as a list): where it is, how much of it to use, and its own shape.
    Unset shape fields (format, columns, prompt_template, template, split, subset) take the data section's."""

    path: str = Field(..., description="The source's data: a file, a save_to_disk directory or a hub dataset name.")
    name: str | None = Field(
        None, description="The name per-source counts and validation losses carry (default: the file's stem)."
    )
    weight: float | None = Field(
        None,
        gt=0.0,
        description="Sampling probability in the mixture (weights are normalised over the sources): the mixture "
        "holds as many examples as the sources together (or data.max_examples), of which this source gives "
        "weight/total, sampled without replacement while it lasts, then again in a fresh seeded order. Set it on "
        "every source or on none; with fraction or max_examples it samples from that part of the source.",
    )
    fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="Use this share of the source's examples (a seeded sample)."
    )
    max_examples: int | None = Field(None, gt=0, description="Use at most this many of the source's examples.")
    validation: str | None = Field(
        None,
        description="The source's own validation file; when unset, data.val_fraction of the source is carved off "
        "(unless data.validation gives one validation set for the whole mixture).",
    )
    format: Format | None = Field(None, description="The source's record shape (default: data.format).")
    columns: dict[str, str] | None = Field(None, description="The source's column map (default: data.columns).")
    prompt_template: str | None = Field(None, description="The source's prompt template (default: data's).")
    template: Literal["auto", "chat", "raw"] | None = Field(None, description="Chat or raw (default: data's).")
    split: str | None = Field(None, description="Split of a hub dataset or DatasetDict (default: data.split).")
    subset: str | None = Field(None, description="Hub configuration name (default: data.subset).")

    @field_validator("path", "validation")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        if value is not None and Path(value).expanduser().exists():
            return str(Path(value).expanduser().resolve())
        return value

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem or self.path


class DataConfig(_Section):
    train: str | list[DataSource] = Field(
        ...,
        description="Training data: a .jsonl/.json/.csv/.tsv/.parquet file (or .conll/.iob/.bio, or .txt in CoNLL "
        "form, for task token_classification: a token and its tag per line), a directory saved with "
        "`datasets.save_to_disk`, or a hub dataset name. Or a mixture: a list of sources, each {path, weight | "
        "fraction | max_examples, format, columns, prompt_template, template, validation} (see DataSource).",
    )
    streaming: bool = Field(
        False,
        description="Read data.train as a stream (datasets' IterableDataset) instead of into memory: for sources "
        "larger than RAM. Examples pass a shuffle buffer (shuffle_buffer), are tokenized and packed on the fly; "
        "train.max_steps is required (a stream has no length), validation comes from data.validation only.",
    )
    shuffle_buffer: int = Field(
        10_000, gt=0, description="Streaming: examples held in the shuffle buffer (a seeded reservoir)."
    )
    validation: str | None = Field(
        None, description="Validation data in the same forms; when unset, `val_fraction` of train is carved off."
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of train held out for validation when `validation` is unset (0: none)."
    )
    split: str = Field("train", description="Split to read from a hub dataset or a saved DatasetDict.")
    validation_split: str = Field("validation", description="Split to read for `validation` from a DatasetDict/hub.")
    subset: str | None = Field(None, description="Hub dataset configuration name, if it has several.")
    format: Format = Field(
        "auto",
        description="Record shape; 'auto' detects it from the keys of the first record. 'classification' (text + "
        "label; the default for task classification) is never detected, only set. 'token_classification' (tokens + "
        "tags lists, or a CoNLL file; the default for task token_classification). 'messages' records may carry "
        "tool calling (tools, tool_calls, tool messages); 'sharegpt' is conversations of {from, value} turns, "
        "detected from the key 'conversations'; instruction records with a 'history' column become conversations.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map of canonical field -> your column, e.g. {prompt: dialogue, completion: summary}. "
        "Canonical fields: text, prompt, completion, messages, instruction, input, output, label, tokens, tags, "
        "conversations, tools, system, history.",
    )
    prompt_template: str | None = Field(
        None,
        description="str.format template for the prompt of prompt_completion/instruction data; may name canonical "
        "fields or any column, e.g. 'Summarize:\\n{dialogue}\\nSummary: '. Instruction data defaults to Alpaca's.",
    )
    template: Literal["auto", "chat", "raw"] = Field(
        "auto",
        description="How examples become text: 'chat' renders through the chat template (prompt/completion become a "
        "user and an assistant turn), 'raw' concatenates prompt and completion; 'auto' is chat for messages data only.",
    )
    chat_template: str | None = Field(
        None,
        description="Chat template when the tokenizer has none (or to replace it): a built-in name "
        "('chatml', 'plain', 'chatml-tools': chatml with Qwen2.5's tool-calling format) or a Jinja template string. Saved with the tuned tokenizer so inference matches.",
    )
    max_length: int = Field(512, gt=1, description="Longest example in tokens (after rendering).")
    overlong: Literal["truncate", "drop", "chunk"] = Field(
        "truncate",
        description="What to do with examples over max_length: truncate, drop, or chunk: cut into max_length pieces "
        "that are all trained (raw text, the default for task causal_lm; and task token_classification, its "
        "default: overlapping windows in which each word is trained once, where it has the most context).",
    )
    packing: bool = Field(
        False,
        description="Pack short examples into rows of max_length with per-example attention boundaries "
        "(no cross-example attention).",
    )
    max_examples: int | None = Field(None, gt=0, description="Use only the first N training examples (quick tries).")
    on_bad_record: Literal["error", "skip"] = Field(
        "error",
        description="What a broken record does (a missing or mistyped field, bad roles; for preference pairs an "
        "empty answer or a transcript whose two sides diverge before the last answer). 'error' refuses the file "
        "with every problem listed by line; 'skip' trains on the good records and leaves the broken ones out, "
        "counted in data.json and listed with their file, line and problem in the run directory's "
        "skipped_records.jsonl (a file with no good record is still refused).",
    )

    @field_validator("train", "validation")
    @classmethod
    def _absolute_local_path(cls, value: str | list[DataSource] | None) -> str | list[DataSource] | None:
        # Saved as an absolute path, so `lmtune eval`/`report` on the run find the data from any directory.
        if isinstance(value, str) and Path(value).expanduser().exists():
            return str(Path(value).expanduser().resolve())
        return value

    @model_validator(mode="after")
    def _mixture_checks(self) -> DataConfig:
        if self.streaming and self.on_bad_record == "skip":
            raise ValueError("data.on_bad_record: skip is not available with data.streaming (a streamed file is "
                             "read as it trains: fix its records, or set streaming: false to skip them)")  # fmt: skip
        if not isinstance(self.train, list):
            return self
        if not self.train:
            raise ValueError("data.train: an empty list of sources; give a file or at least one source")
        names = [s.label for s in self.train]
        if len(set(names)) != len(names):
            raise ValueError(f"data.train: sources share a name ({', '.join(names)}); give each a distinct name")
        weighted = [s.weight is not None for s in self.train]
        if any(weighted) and not all(weighted):
            raise ValueError("data.train: set weight on every source of the mixture or on none")
        if self.max_examples is not None and not all(weighted):
            raise ValueError(
                "data.max_examples: with a mixture it sets the size of a weighted mixture; give each source its own "
                "max_examples instead"
            )
        if self.streaming:
            raise ValueError("data.streaming reads one source; a mixture of sources is read into memory")
        return self

    @property
    def mixture(self) -> bool:
        """Whether data.train is a list of sources."""
        return isinstance(self.train, list)

    def sources(self) -> list[DataSource]:
        """data.train as sources: the list of a mixture, or its one source with the section's shape."""
        if isinstance(self.train, list):
            return list(self.train)
        return [DataSource(path=self.train, max_examples=self.max_examples)]

    leakage: Literal["warn", "error", "off"] = Field(
        "warn",
        description="Before training, look for validation examples that are also in train (exact after normalising "
        "case, punctuation and whitespace, whole or input side): 'warn', 'error' (refuse to train) or 'off'. "
        "`lmtune data leakage` runs the full near-duplicate and n-gram check.",
    )
    replay: ReplayConfig | None = Field(
        None,
        description="Replay: mix general text into the training examples so the model keeps its general "
        "language ability (off by default; `replay: {}` mixes 10% of the shipped general sample).",
    )
