from __future__ import annotations

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from lmtune.config import FreezeMethod, FullMethod, LoraMethod
from lmtune.errors import LmtuneError
from lmtune.methods import METHODS, apply_method, transformer_blocks
from lmtune.model import count_parameters


def linear_shapes(model: torch.nn.Module, names: set[str] | None = None) -> dict[str, tuple[int, int]]:
    """(in, out) features of the linear layers (nn.Linear or GPT-2's Conv1D), read from the weight shapes.

    `names` picks layers by their last name component; None means every linear layer except the output head.
    """
    out = {}
    for name, module in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear):
            fan_out, fan_in = module.weight.shape
        elif isinstance(module, Conv1D):
            fan_in, fan_out = module.weight.shape  # Conv1D stores the transposed weight
        else:
            continue
        if (names is None and module is not model.get_output_embeddings()) or (names and short in names):
            out[name] = (fan_in, fan_out)
    return out


def lora_count(shapes: dict[str, tuple[int, int]], r: int) -> int:
    return sum(r * (fan_in + fan_out) for fan_in, fan_out in shapes.values())


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("model_fixture", ["tiny_model", "gpt2_model"])
@pytest.mark.parametrize("r", [2, 8])
def test_lora_trains_exactly_r_times_in_plus_out_per_adapted_layer(request, model_fixture, r):
    model = request.getfixturevalue(model_fixture)
    shapes = linear_shapes(model)
    expected_layers = 7 * 2 if model_fixture == "tiny_model" else 4 * 2  # 2 blocks of q,k,v,o,gate,up,down / GPT-2's 4
    assert len(shapes) == expected_layers
    _, base_total = count_parameters(model)
    peft_model = apply_method(model, LoraMethod(r=r, dropout=0.0))
    trainable, total = count_parameters(peft_model)
    assert trainable == lora_count(shapes, r)
    assert total == base_total + trainable
    names = trainable_names(peft_model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert len(names) == 2 * len(shapes)


def test_lora_on_named_targets_and_modules_to_save(tiny_model):
    shapes = linear_shapes(tiny_model, {"q_proj", "v_proj"})
    assert len(shapes) == 4
    head = tiny_model.lm_head.weight.numel()
    peft_model = apply_method(
        tiny_model, LoraMethod(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    )
    trainable, _ = count_parameters(peft_model)
    assert trainable == lora_count(shapes, 4) + head
    saved = {n for n in trainable_names(peft_model) if "lora_" not in n}
    assert len(saved) == 1 and "lm_head" in next(iter(saved))


def test_lora_starts_as_the_base_model_and_trains_only_the_adapter(tiny_model):
    ids = torch.tensor([[1, 276, 201, 74, 75, 2]])
    tiny_model.eval()
    with torch.no_grad():
        before = tiny_model(input_ids=ids).logits
    peft_model = apply_method(tiny_model, LoraMethod(r=4, dropout=0.0)).eval()
    out = peft_model(input_ids=ids, use_cache=False).logits
    assert torch.allclose(out, before, atol=1e-6)  # lora_B starts at zero
    out.sum().backward()
    for name, p in peft_model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_lora_with_unknown_target_is_a_config_error(tiny_model):
    with pytest.raises(LmtuneError, match=r"method\.target_modules"):
        apply_method(tiny_model, LoraMethod(target_modules=["no_such_proj"]))


@pytest.mark.parametrize("model_fixture", ["tiny_model", "gpt2_model"])
def test_full_trains_everything(request, model_fixture):
    model = request.getfixturevalue(model_fixture)
    for p in model.parameters():
        p.requires_grad_(False)
    model = apply_method(model, FullMethod())
    trainable, total = count_parameters(model)
    assert trainable == total > 0
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_trains_exactly_the_last_blocks(tiny_model):
    model = apply_method(tiny_model, FreezeMethod(train_last_layers=1))
    expected = {f"model.layers.1.{n}" for n, _ in tiny_model.model.layers[1].named_parameters()}
    assert trainable_names(model) == expected
    assert count_parameters(model)[0] == sum(p.numel() for p in tiny_model.model.layers[1].parameters())


def test_freeze_adds_glob_matched_modules(tiny_model):
    model = apply_method(tiny_model, FreezeMethod(train_last_layers=1, train_modules=["lm_head.*", "model.norm.*"]))
    expected = {f"model.layers.1.{n}" for n, _ in tiny_model.model.layers[1].named_parameters()}
    assert trainable_names(model) == expected | {"lm_head.weight", "model.norm.weight"}


def test_freeze_all_blocks_and_none(tiny_model):
    n_blocks = len(tiny_model.model.layers)
    model = apply_method(tiny_model, FreezeMethod(train_last_layers=n_blocks))
    assert trainable_names(model) == {n for n, _ in model.named_parameters() if n.startswith("model.layers.")}
    model = apply_method(model, FreezeMethod(train_last_layers=0, train_modules=["lm_head.weight"]))
    assert trainable_names(model) == {"lm_head.weight"}


def test_freeze_on_gpt2_finds_its_blocks(gpt2_model):
    assert transformer_blocks(gpt2_model) is gpt2_model.transformer.h
    model = apply_method(gpt2_model, FreezeMethod(train_last_layers=1, train_modules=["transformer.ln_f.*"]))
    expected = {f"transformer.h.1.{n}" for n, _ in gpt2_model.transformer.h[1].named_parameters()}
    assert trainable_names(model) == expected | {"transformer.ln_f.weight", "transformer.ln_f.bias"}


def test_freeze_more_layers_than_the_model_has_is_an_error(tiny_model):
    with pytest.raises(LmtuneError) as info:
        apply_method(tiny_model, FreezeMethod(train_last_layers=3))
    assert "method.train_last_layers" in str(info.value)
    assert "2 blocks" in str(info.value)
    assert "0 to 2" in info.value.hint


def test_freeze_pattern_that_matches_nothing_is_an_error(tiny_model):
    with pytest.raises(LmtuneError) as info:
        apply_method(tiny_model, FreezeMethod(train_last_layers=1, train_modules=["head.*"]))
    assert "method.train_modules: 'head.*' matches no parameter" in str(info.value)
    assert "lm_head.weight" in info.value.hint  # shows what names look like


def test_freeze_with_nothing_to_train_is_an_error(tiny_model):
    with pytest.raises(LmtuneError, match="nothing left to train"):
        apply_method(tiny_model, FreezeMethod(train_last_layers=0))


def test_every_method_tag_has_a_function():
    assert set(METHODS) == {"full", "lora", "freeze"}
