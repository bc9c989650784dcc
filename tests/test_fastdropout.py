"""FastDropout is nn.Dropout with a cheaper mask: same rate, same scaling, seeded, eval is the identity."""

import torch
from torch import nn

from lmtune.train.fastdropout import FastDropout, dropout_mask, use_fast_dropout


def test_mask_drops_at_the_rate_in_every_lane():
    torch.manual_seed(0)
    keep = dropout_mask(torch.Size([400_000]), 0.1, torch.device("cpu"))
    lanes = 1 - keep.view(-1, 4).float().mean(0)  # each int16 lane of the 64-bit draws drops at p
    assert torch.allclose(lanes, torch.full((4,), 0.1), atol=0.004), lanes
    torch.manual_seed(0)
    assert torch.equal(dropout_mask(torch.Size([400_000]), 0.1, torch.device("cpu"), keep=False), ~keep)


def test_forward_backward_scale_like_nn_dropout_and_repeat_with_the_seed():
    d = FastDropout(0.25)
    x = torch.ones(64, 100, requires_grad=True)
    torch.manual_seed(1)
    y = d(x)
    kept = y != 0
    scale = torch.tensor(4 / 3)  # kept values scaled by 1 / (1 - p), in float32
    assert set(y.unique().tolist()) == {0.0, scale.item()}
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.03
    y.sum().backward()
    assert torch.equal(x, torch.ones(64, 100))  # scaling in place touched the output only
    assert torch.equal(x.grad, kept.float() * scale)  # the gradient flows through the kept elements only
    torch.manual_seed(1)
    assert torch.equal(d(x), y)
    d.eval()
    assert torch.equal(d(x), x)


def test_swaps_every_active_dropout_module(tiny_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model, LoraConfig(r=2, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    n_layers = tiny_model.config.num_hidden_layers
    assert use_fast_dropout(model) == 2 * n_layers
    assert all(type(m) is not nn.Dropout or m.p == 0 for m in model.modules())
    assert sum(isinstance(m, FastDropout) for m in model.modules()) == 2 * n_layers
