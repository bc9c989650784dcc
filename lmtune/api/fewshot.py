"""Prompts for evaluating generations: rendered as training rendered them, with few-shot demonstrations.

A baseline is the base model prompted with K solved examples from the run's training split, drawn at random
(seeded) or retrieved by TF-IDF similarity to the input (the retrieval-augmented baseline users weigh against
fine-tuning).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmtune.data.formats import ChatExample, Example, LabelExample, Message, PromptCompletionExample
from lmtune.data.text import example_input
from lmtune.errors import DataError, LmtuneError


@dataclass(frozen=True)
class Baseline:
    """The base model prompted with `shots` demonstrations (0: zero-shot), picked at random or by similarity."""

    shots: int = 0
    pick: str = "random"

    @property
    def name(self) -> str:
        return "zero-shot" if self.shots == 0 else f"{self.shots}-shot ({self.pick})"

    @classmethod
    def parse(cls, text: str) -> Baseline:
        """`zero-shot`, `few-shot:K`, `few-shot:K:random` or `few-shot:K:retrieved`."""
        parts = text.strip().split(":")
        try:
            if parts == ["zero-shot"]:
                return cls()
            if parts[0] == "few-shot" and len(parts) in (2, 3) and int(parts[1]) > 0:
                pick = parts[2] if len(parts) == 3 else "random"
                if pick in ("random", "retrieved"):
                    return cls(int(parts[1]), pick)
        except ValueError:
            pass
        raise LmtuneError(
            f"unknown baseline {text!r}",
            hint="use zero-shot, few-shot:K (random demonstrations) or few-shot:K:retrieved (most similar ones)",
        )


def reference_answer(example: Example) -> str:
    """The answer a generation is scored against: the completion, the label, or the last trained assistant turn."""
    if isinstance(example, PromptCompletionExample):
        return example.completion
    if isinstance(example, LabelExample):
        return example.label
    assert isinstance(example, ChatExample)
    return _split_chat(example)[1].content


def _split_chat(example: ChatExample) -> tuple[tuple[Message, ...], Message]:
    """The conversation up to its last trained assistant turn, and that turn (the reference)."""
    for i in range(len(example.messages) - 1, -1, -1):
        m = example.messages[i]
        if m.role == "assistant" and m.weight:
            return example.messages[:i], m
    raise DataError(example.source, example.line, "messages", "has no assistant turn to evaluate")


def render_prompt(example: Example, tokenizer: Any, chat: bool, demos: Sequence[Example] = ()) -> str:
    """What the model is given, rendered as training rendered it; demonstrations go first as solved examples."""
    if chat:
        history: list[dict[str, str]] = []
        for demo in demos:
            context, answer = _as_chat(demo)
            history += [{"role": m.role, "content": m.content} for m in context if m.role != "system"]
            history.append({"role": "assistant", "content": answer.content})
        context, _ = _as_chat(example)
        system = [{"role": m.role, "content": m.content} for m in context if m.role == "system"]
        rest = [{"role": m.role, "content": m.content} for m in context if m.role != "system"]
        return tokenizer.apply_chat_template([*system, *history, *rest], tokenize=False, add_generation_prompt=True)
    assert isinstance(example, PromptCompletionExample)
    shots = "".join(f"{d.prompt}{d.completion}\n\n" for d in demos if isinstance(d, PromptCompletionExample))
    return shots + example.prompt


def _as_chat(example: Example) -> tuple[tuple[Message, ...], Message]:
    if isinstance(example, PromptCompletionExample):
        return (Message("user", example.prompt),), Message("assistant", example.completion)
    assert isinstance(example, ChatExample)
    return _split_chat(example)


def demonstrations(
    baseline: Baseline, examples: Sequence[Example], train: Sequence[Example], seed: int
) -> list[list[Example]]:
    """`shots` training examples per evaluated example: seeded random ones, or the most similar inputs (TF-IDF)."""
    if baseline.shots == 0:
        return [[] for _ in examples]
    if len(train) < baseline.shots:
        raise LmtuneError(f"{baseline.name}: the training split has only {len(train)} examples")
    if baseline.pick == "random":
        rng = random.Random(seed)
        return [rng.sample(list(train), baseline.shots) for _ in examples]
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import linear_kernel

    vectorizer = TfidfVectorizer().fit([example_input(t) for t in train])
    similarity = linear_kernel(
        vectorizer.transform([example_input(e) for e in examples]),
        vectorizer.transform([example_input(t) for t in train]),
    )
    # Most similar last: the nearest demonstration sits right before the question.
    return [[train[j] for j in row.argsort()[::-1][: baseline.shots][::-1]] for row in similarity]
