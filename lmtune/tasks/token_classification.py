"""Task token_classification: a tag per word (NER, BIO tags) by a token-classification head; seqeval entity F1."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lmtune.data.ner import entity_scores, tag_names, tag_sequences, tokenize_tokens
from lmtune.tasks.base import MODEL_METHODS, Task, TokenizeOptions, not_measured

if TYPE_CHECKING:
    import torch


def _tokenize(examples, tokenizer, opts: TokenizeOptions):
    return tokenize_tokens(examples, tokenizer, opts.labels, max_length=opts.max_length, overlong=opts.overlong)


class EntityScorer:
    """Entity-level precision, recall and F1 (seqeval, micro) and the token accuracy over the tagged words."""

    def __init__(self, id2label: dict[int, str]) -> None:
        self.id2label = id2label
        self.gold: list[list[str]] = []
        self.predicted: list[list[str]] = []

    def add(self, labels: torch.Tensor, logits: torch.Tensor) -> None:
        gold, predicted = tag_sequences(labels.tolist(), logits.argmax(-1).tolist(), self.id2label)
        self.gold += gold
        self.predicted += predicted

    def result(self, gather: Callable[[list[Any]], list[Any]]) -> dict[str, float]:
        return entity_scores(gather(self.gold), gather(self.predicted))


TOKEN_CLASSIFICATION = Task(
    name="token_classification",
    summary="a tag per word (NER with BIO tags) by a token-classification head; entity F1 (seqeval)",
    model="token_classifier",
    methods=MODEL_METHODS,
    objective_name="token_classification",
    tokenize=_tokenize,
    labels=tag_names,
    scorer=EntityScorer,
    forgetting_note=not_measured("token_classification", "a token classifier"),
    renders_text=False,
    predicts_with_head=True,
    class_weights=True,
    summary_metrics=("accuracy", "f1"),
    best_metric="f1",
    unit="words",
)
