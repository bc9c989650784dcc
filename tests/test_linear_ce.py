"""The chunked head + cross-entropy equals the model's own logits + cross-entropy: loss and every gradient."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmtune.data.types import IGNORE
from lmtune.train import linear_ce
from lmtune.train.linear_ce import causal_hidden_loss, linear_cross_entropy, output_head
from lmtune.train.objectives import causal_lm_loss


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_full_logits_loss_and_gradients(monkeypatch, smoothing, bias):
    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 7 * 50)  # several chunks, the last one short
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=bias).double()
    hidden = torch.randn(23, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (23,))

    ours = linear_cross_entropy(hidden, head, targets, label_smoothing=smoothing)
    ours.backward()
    got = (hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone() if bias else None)
    hidden.grad, head.weight.grad = None, None
    if bias:
        head.bias.grad = None
    ref = F.cross_entropy(head(hidden), targets, reduction="sum", label_smoothing=smoothing)
    ref.backward()

    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(got[0], hidden.grad)
    torch.testing.assert_close(got[1], head.weight.grad)
    if bias:
        torch.testing.assert_close(got[2], head.bias.grad)


def test_frozen_head_gets_no_gradient_and_no_grad_mode_works():
    head = nn.Linear(8, 30, bias=False)
    head.weight.requires_grad_(False)
    hidden = torch.randn(5, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, head, torch.randint(0, 30, (5,)))
    loss.backward()
    assert head.weight.grad is None and hidden.grad is not None
    with torch.no_grad():
        assert float(linear_cross_entropy(hidden, head, torch.randint(0, 30, (5,)))) > 0


def test_causal_hidden_loss_equals_causal_lm_loss_on_a_model(tiny_model):
    """Through a real causal LM: the same summed loss and count as its logits give, and the same gradients."""
    head = output_head(tiny_model)
    assert head is tiny_model.get_output_embeddings()
    ids = torch.randint(3, 200, (3, 12))
    labels = ids.clone()
    labels[:, :5] = IGNORE
    labels[2, 9:] = IGNORE  # padding

    out = tiny_model(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
    loss, n = causal_hidden_loss(out.hidden_states[-1], head, labels, label_smoothing=0.1)
    loss.backward()
    ours = {k: p.grad.clone() for k, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    ref, m = causal_lm_loss(tiny_model(input_ids=ids).logits, labels, label_smoothing=0.1)
    ref.backward()

    assert n == m == 7 + 7 + 4  # positions 5..11 of rows 0-1, 5..8 of row 2
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for k, p in tiny_model.named_parameters():
        torch.testing.assert_close(ours[k], p.grad, rtol=1e-4, atol=1e-6)


def test_heads_the_chunked_loss_cannot_use(tiny_model):
    from peft import LoraConfig, get_peft_model

    assert output_head(get_peft_model(tiny_model, LoraConfig(r=2, target_modules="all-linear"))) is not None
    wrapped = get_peft_model(
        type(tiny_model)(tiny_model.config), LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
    )
    assert output_head(wrapped) is None  # the head is a modules_to_save copy, not the plain layer
    tiny_model.config.final_logit_softcapping = 30.0
    assert output_head(tiny_model) is None
