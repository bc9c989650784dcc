"""The data stage's shared types: a leaf module (it imports nothing of lmtune), so the readers, formats and
tokenizers that build on each other's results never import one another in a circle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The label of a position no loss is computed on (PyTorch's cross-entropy ignore_index).
IGNORE = -100

_JSON_TYPES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages read by people who wrote JSON, not Python."""
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), f"a {type(value).__name__}")


@dataclass(frozen=True)
class Record:
    """One raw record and where it came from, so later stages can report ``source:line``."""

    data: dict[str, Any]
    source: str
    line: int


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # aligned with input_ids (IGNORE where not trained); all IGNORE for an encoder input
    decoder_labels: list[int] | None = None  # encoder-decoder (task seq2seq): the decoder's target tokens
    class_label: int | None = None  # task classification: the index of the example's label


@dataclass
class TokenStats:
    examples: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    chunked: int = 0  # raw-text examples cut into max_length pieces (overlong: chunk)
    tokens: int = 0
    trained_tokens: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "lengths"}
        if self.lengths:
            ordered = sorted(self.lengths)
            out["max_length_seen"] = ordered[-1]
            out["median_length"] = ordered[len(ordered) // 2]
        return out
