"""Validation during training: the token-weighted loss of the validation rows and the task's own metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from accelerate import Accelerator

from lmtune.data.batching import Row, collate
from lmtune.data.ner import entity_scores, tag_sequences
from lmtune.train.checkpoint import is_sharded
from lmtune.train.loop import _forward, loss_head
from lmtune.train.objectives import OBJECTIVES, Objective


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    rows: Sequence[Row],
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
    task: str = "sft",
    objective: Objective | None = None,
) -> dict[str, float]:
    """Token-weighted mean loss and perplexity over rows (each process takes its share).

    Task classification also gets the accuracy and macro F1 of the argmax predictions (every label of the model
    weighs the same in the F1, predicted or not); `tokens` then counts examples. Task token_classification gets
    entity-level precision, recall and F1 (seqeval, micro) and the token accuracy over the tagged words.
    """
    objective = objective or OBJECTIVES[task]
    head = loss_head(model, accelerator, objective)
    was_training = model.training
    model.eval()
    mine = list(rows)[accelerator.process_index :: accelerator.num_processes]
    # FSDP gathers each layer's weights inside every forward, a collective: all processes must run as
    # many batches as the one with most rows (a process short of one repeats a batch and counts none of it).
    shares = math.ceil(len(rows) / accelerator.num_processes)
    n_batches = math.ceil((shares if is_sharded(accelerator.unwrap_model(model)) else len(mine)) / batch_size)
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    gold: list[int] = []
    predicted: list[int] = []
    n_classes = 0
    tags_gold: list[list[str]] = []
    tags_predicted: list[list[str]] = []
    for i in range(0, n_batches * batch_size, batch_size):
        part = mine[i : i + batch_size]
        batch = collate(part or list(rows[:1]), pad_id)
        with accelerator.autocast():
            logits, (loss, n) = _forward(model, batch, accelerator.device, objective, head)
        if not part:
            continue
        total += torch.tensor([float(loss), n], dtype=torch.float64, device=accelerator.device)
        if task == "classification":
            n_classes = logits.shape[-1]
            gold += batch["labels"].tolist()
            predicted += logits.argmax(-1).tolist()
        if task == "token_classification":
            id2label = accelerator.unwrap_model(model).config.id2label
            g, p = tag_sequences(batch["labels"].tolist(), logits.argmax(-1).tolist(), id2label)
            tags_gold, tags_predicted = tags_gold + g, tags_predicted + p
    total = accelerator.reduce(total, reduction="sum")
    model.train(was_training)
    loss_sum, n = float(total[0]), int(total[1])
    mean = loss_sum / max(n, 1)
    out: dict[str, float] = {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": n}
    if task == "classification":
        out.update(_label_scores(gold, predicted, n_classes, accelerator))
    if task == "token_classification":
        from accelerate.utils import gather_object

        if accelerator.num_processes > 1:
            tags_gold, tags_predicted = gather_object(tags_gold), gather_object(tags_predicted)
        out.update(entity_scores(tags_gold, tags_predicted))
    return out


def _label_scores(gold: list[int], predicted: list[int], n_classes: int, accelerator: Accelerator) -> dict[str, float]:
    """Accuracy and macro F1 over every process's predictions (scikit-learn)."""
    from accelerate.utils import gather_object
    from sklearn.metrics import accuracy_score, f1_score

    if accelerator.num_processes > 1:
        gold, predicted = gather_object(gold), gather_object(predicted)
        n_classes = max(gather_object([n_classes]))
    if not gold:
        return {}
    labels = list(range(n_classes)) or None
    macro = f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(gold, predicted)), "f1": float(macro)}
