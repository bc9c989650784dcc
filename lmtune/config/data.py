"""The `data` section: where the examples come from, their shape and length, leakage and replay."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

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


class DataConfig(_Section):
    train: str = Field(
        ...,
        description="Training data: a .jsonl/.json/.csv/.tsv/.parquet file (or .conll/.iob/.bio, or .txt in CoNLL "
        "form, for task token_classification: a token and its tag per line), a directory saved with "
        "`datasets.save_to_disk`, or a hub dataset name.",
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
    format: Literal[
        "auto", "text", "prompt_completion", "messages", "instruction", "classification", "token_classification"
    ] = Field(
        "auto",
        description="Record shape; 'auto' detects it from the keys of the first record. 'classification' (text + "
        "label; the default for task classification) is never detected, only set. 'token_classification' (tokens + "
        "tags lists, or a CoNLL file; the default for task token_classification).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map of canonical field -> your column, e.g. {prompt: dialogue, completion: summary}. "
        "Canonical fields: text, prompt, completion, messages, instruction, input, output, label, tokens, tags.",
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
        "('chatml', 'plain') or a Jinja template string. Saved with the tuned tokenizer so inference matches.",
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
        description="Preference pairs (tasks reward, dpo): what a broken record does (an empty answer, a transcript "
        "whose two sides diverge before the last answer, a missing field). 'error' refuses the file with every "
        "problem listed by line; 'skip' trains on the good pairs and leaves the broken ones out, counted in "
        "data.json and listed with their file, line and problem in the run directory's skipped_records.jsonl.",
    )

    @field_validator("train", "validation")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        # Saved as an absolute path, so `lmtune eval`/`report` on the run find the data from any directory.
        if value is not None and Path(value).expanduser().exists():
            return str(Path(value).expanduser().resolve())
        return value

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
