"""Task classification: a label per text, by a classification head on an encoder or a decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lmtune.data.tokenize import label_names, tokenize_classification
from lmtune.tasks.base import MODEL_METHODS, Task, TokenizeOptions, not_measured

if TYPE_CHECKING:
    import torch


def _tokenize(examples, tokenizer, opts: TokenizeOptions):
    return tokenize_classification(examples, tokenizer, opts.labels, max_length=opts.max_length, overlong=opts.overlong)


class LabelScorer:
    """Accuracy and macro F1 of the argmax predictions (scikit-learn); every label of the model weighs the same
    in the F1, predicted or not."""

    def __init__(self, id2label: dict[int, str]) -> None:
        self.n_classes = len(id2label)
        self.gold: list[int] = []
        self.predicted: list[int] = []

    def add(self, labels: torch.Tensor, logits: torch.Tensor) -> None:
        self.gold += labels.tolist()
        self.predicted += logits.argmax(-1).tolist()

    def result(self, gather: Callable[[list[Any]], list[Any]]) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        gold, predicted = gather(self.gold), gather(self.predicted)
        if not gold:
            return {}
        macro = f1_score(gold, predicted, labels=list(range(self.n_classes)) or None, average="macro", zero_division=0)
        return {"accuracy": float(accuracy_score(gold, predicted)), "f1": float(macro)}


CLASSIFICATION = Task(
    name="classification",
    summary="a label per text (sentiment, intent, topic) by a classification head; accuracy and macro F1",
    model="classifier",
    methods=MODEL_METHODS,
    objective_name="classification",
    tokenize=_tokenize,
    labels=label_names,
    scorer=LabelScorer,
    forgetting_note=not_measured("classification", "a classifier"),
    renders_text=False,
    predicts_with_head=True,
    class_weights=True,
    summary_metrics=("accuracy", "f1"),
    best_metric="accuracy",
    unit="examples",
)
