"""The text of an example as the data checks see it: whole, or its input side, and a normalised form for hashing.

Duplicate, near-duplicate and leakage checks compare `Doc`s, so they work the same for every record shape and
every finding points back at its file and line.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lmtune.data.formats import (
    ChatExample,
    Example,
    LabelExample,
    PromptCompletionExample,
    TextExample,
    TokensExample,
)

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class Doc:
    """A piece of text to compare, and where it came from (1-based line)."""

    text: str
    source: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def example_text(example: Example) -> str:
    """What the model reads and writes for this example (but the system prompt), turns joined by blank lines."""
    if isinstance(example, TextExample | LabelExample | TokensExample):  # a tagged sentence: its words
        return example.text
    if isinstance(example, PromptCompletionExample):
        return f"{example.prompt}\n\n{example.completion}"
    assert isinstance(example, ChatExample)
    # System prompts are left out: most datasets share one, and that boilerplate would make every pair look alike.
    return "\n\n".join(m.content for m in example.messages if m.role != "system")


def example_input(example: Example) -> str:
    """What the model is asked (the prompt, or the user turns); raw text (and a text to classify) is all input."""
    if isinstance(example, TextExample | LabelExample | TokensExample):  # a tagged sentence: its words
        return example.text
    if isinstance(example, PromptCompletionExample):
        return example.prompt
    assert isinstance(example, ChatExample)
    return "\n\n".join(m.content for m in example.messages if m.role == "user")


def as_docs(examples: Sequence[Example], part: Literal["all", "input"] = "all") -> list[Doc]:
    text = example_text if part == "all" else example_input
    return [Doc(text(ex), ex.source, ex.line) for ex in examples]


def normalize_text(text: str) -> str:
    """Case, Unicode form, punctuation and whitespace removed: the key two 'exact' duplicates share."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()
