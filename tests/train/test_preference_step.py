"""The DPO step through the chunked head (last hidden states, no full-vocabulary logits) equals the step through
the model's logits: the same loss, metrics and gradients, for the policy and for the reference."""

from __future__ import annotations

import pytest
import torch

from lmtune.config import LoraMethod, ModelConfig
from lmtune.data.pairs import collate_pairs, tokenize_pairs
from lmtune.data.preferences import PreferencePair
from lmtune.methods import apply_method
from lmtune.model import load_model, load_tokenizer
from lmtune.train.linear_ce import output_head
from lmtune.train.preference_step import ADAPTER_DISABLED, preference_step, with_reference_logps

PRESET = "preset:tiny-chat"


def _batch() -> tuple[torch.nn.Module, dict[str, torch.Tensor], list]:
    tok = load_tokenizer(ModelConfig(name=PRESET))
    pairs = [
        PreferencePair(f"Tell me about the {x}.", f" The {x} is good, very good.", f" The {x} is bad.", "t", i)
        for i, x in enumerate(["cat", "dog", "sun", "tree"])
    ]
    rows, _ = tokenize_pairs(pairs, tok, max_length=64)
    torch.manual_seed(0)
    model = apply_method(load_model(ModelConfig(name=PRESET)), LoraMethod(r=4, dropout=0.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter, so the policy differs from its reference
            torch.nn.init.normal_(p, std=0.05)
    return model, collate_pairs(rows, tok.pad_token_id), rows


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_the_head_path_equals_the_logits_path(loss_type: str) -> None:
    model, batch, _ = _batch()
    head = output_head(model)
    assert head is not None
    results = []
    for use_head in (None, head):
        model.zero_grad()
        settings = {"beta": 0.1, "loss_type": loss_type}
        loss, n, metrics = preference_step(
            model, batch, kind="dpo", settings=settings, reference=ADAPTER_DISABLED, head=use_head
        )
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        results.append((float(loss), n, metrics, grads))
    (loss_a, n_a, m_a, g_a), (loss_b, n_b, m_b, g_b) = results
    assert n_a == n_b == 4
    assert loss_b == pytest.approx(loss_a, rel=1e-5, abs=1e-5)
    for key in m_a:
        assert m_b[key] == pytest.approx(m_a[key], rel=1e-5, abs=1e-4), key
    assert m_a["margin"] != 0.0  # the policy differs from the reference: the check has something to compare
    for name in g_a:
        torch.testing.assert_close(g_b[name], g_a[name], rtol=1e-3, atol=1e-5)


def test_precomputed_reference_equals_the_reference_computed_in_the_step() -> None:
    model, batch, rows = _batch()
    with model.disable_adapter():
        precomputed = with_reference_logps(model, rows, 2, 0, head=output_head(model))
    chosen = torch.tensor([r.ref_chosen_logp for r in precomputed])
    from lmtune.train.preference_step import reference_logps

    expected, _ = reference_logps(model, batch, ADAPTER_DISABLED)
    torch.testing.assert_close(chosen, expected, rtol=1e-5, atol=1e-5)
