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


def dropout_mask(shape: torch.Size, p: float, device: torch.device, keep: bool = True) -> torch.Tensor:
    """A boolean keep-mask: True with probability 1 - p (to 2^-16), one 64-bit random draw per four elements; with
    keep=False its complement (True where dropped), from the same draws."""
    n = shape.numel()
    draws = torch.empty((n + _LANES - 1) // _LANES, dtype=torch.int64, device=device)
    # The full signed range: random_() alone leaves the top bit 0, so one lane in four would never drop.
    lanes = draws.random_(-(2**63), 2**63 - 1).view(torch.int16)[:n].view(shape)
    threshold = round(p * 65536) - 32768
    return lanes >= threshold if keep else lanes < threshold


class FastDropout(nn.Dropout):
    """`nn.Dropout` (same p, same scaling by 1 / (1 - p), identity in eval mode) with `dropout_mask` on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p == 1:
            return x * 0
        # Drop where not keep, then scale in place: one new tensor instead of three (masked_fill's backward needs
        # only the mask, so scaling its output in place is safe); the result is the same, bit for bit.
        drop = dropout_mask(x.shape, self.p, x.device, keep=False)
        return x.masked_fill(drop, 0).mul_(1 / (1 - self.p))


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
