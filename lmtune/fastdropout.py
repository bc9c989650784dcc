"""Dropout whose random mask costs a quarter of torch's on the CPU.

torch draws a CPU dropout mask one float per element (`bernoulli_`), which on a 2-core machine takes longer than
the matmul the mask sits in front of: with LoRA dropout on every linear layer of a Llama, a quarter of each
training step went into `aten::bernoulli_` (torch.profiler, benchmarks/README.md). Here one 64-bit draw of the
same generator gives four 16-bit lanes, each compared with a threshold: an element is dropped with probability
round(p * 65536) / 65536 (p to within 2^-16), independently, from the seeded torch generator (so runs repeat and
resume exactly). On other devices torch's own dropout is used: their generators are fast.
"""

from __future__ import annotations

import torch
from torch import nn

_LANES = 4  # int16 lanes per int64 draw


def dropout_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A boolean keep-mask: True with probability 1 - p (to 2^-16), one 64-bit random draw per four elements."""
    n = shape.numel()
    draws = torch.empty((n + _LANES - 1) // _LANES, dtype=torch.int64, device=device)
    # The full signed range: random_() alone leaves the top bit 0, so one lane in four would never drop.
    lanes = draws.random_(-(2**63), 2**63 - 1).view(torch.int16)[:n].view(shape)
    return lanes >= round(p * 65536) - 32768


class FastDropout(nn.Dropout):
    """`nn.Dropout` (same p, same scaling by 1 / (1 - p), identity in eval mode) with `dropout_mask` on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p == 1:
            return x * 0
        keep = dropout_mask(x.shape, self.p, x.device)
        return x.masked_fill(~keep, 0) * (1 / (1 - self.p))


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every `nn.Dropout` with p > 0 inside `model` for a `FastDropout` of the same p; returns how many.

    Dropout modules hold no weights, so what is saved and loaded does not change."""
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, FastDropout(child.p, inplace=False))
                swapped += 1
    return swapped
