"""Validation during training: the token-weighted loss of the validation rows and the task's own metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from accelerate import Accelerator

from lmtune.data.batching import Row
from lmtune.train.checkpoint import is_sharded
from lmtune.train.launch import unwrap
from lmtune.train.loop import _forward, batcher, loss_head
from lmtune.train.objectives import OBJECTIVES, Objective


class Scorer(Protocol):
    """Validation metrics beyond the loss (a task's `scorer`): fed each batch's labels and the model's logits,
    read once at the end with a function that gathers a list over all processes."""

    def add(self, labels: torch.Tensor, logits: torch.Tensor) -> None: ...

    def result(self, gather: Callable[[list[Any]], list[Any]]) -> dict[str, float]: ...


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    rows: Sequence[Row],
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
    objective: Objective | None = None,
    scorer: Scorer | None = None,
) -> dict[str, float]:
    """Token-weighted mean loss and perplexity over rows (each process takes its share), plus the `scorer`'s
    metrics (a classifier's accuracy and F1, a tagger's entity F1, ...); `tokens` counts what the loss counts.
    The objective defaults to the causal-LM loss."""
    objective = objective or OBJECTIVES["causal_lm"]
    head = loss_head(model, accelerator, objective) if scorer is None else None
    was_training = model.training
    model.eval()
    mine = list(rows)[accelerator.process_index :: accelerator.num_processes]
    # FSDP gathers each layer's weights inside every forward, a collective: all processes must run as
    # many batches as the one with most rows (a process short of one repeats a batch and counts none of it).
    shares = math.ceil(len(rows) / accelerator.num_processes)
    n_batches = math.ceil((shares if is_sharded(unwrap(accelerator, model)) else len(mine)) / batch_size)
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    sums: dict[str, float] = {}  # the objective's own metrics, summed (preference pairs: accuracy, margins)
    batch_of = batcher(objective)
    for i in range(0, n_batches * batch_size, batch_size):
        part = mine[i : i + batch_size]
        batch = batch_of(part or list(rows[:1]), pad_id)
        with accelerator.autocast():
            logits, (loss, n), metrics = _forward(model, batch, accelerator.device, objective, head)
        if not part:
            continue
        total += torch.tensor([float(loss), n], dtype=torch.float64, device=accelerator.device)
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
        if scorer is not None:
            scorer.add(batch["labels"], logits)
    total = accelerator.reduce(total, reduction="sum")
    names = sorted(sums)
    if names:
        summed = torch.tensor([sums[k] for k in names], dtype=torch.float64, device=accelerator.device)
        sums = dict(zip(names, accelerator.reduce(summed, reduction="sum").tolist(), strict=True))
    model.train(was_training)
    loss_sum, n = float(total[0]), int(total[1])
    mean = loss_sum / max(n, 1)
    out: dict[str, float] = {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": n}
    out.update({key: value / max(n, 1) for key, value in sums.items()})
    if scorer is not None:
        out.update(scorer.result(lambda items: gather_all(items, accelerator)))
    return out


def gather_all(items: list[Any], accelerator: Accelerator) -> list[Any]:
    """A list from every process, concatenated (the list itself on one process)."""
    if accelerator.num_processes == 1:
        return items
    from accelerate.utils import gather_object

    return gather_object(items)
