from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers.pytorch_utils import Conv1D

from lmtune.config import FreezeMethod, FullMethod, LoraMethod, QloraMethod
from lmtune.errors import LmtuneError
from lmtune.methods import METHODS, apply_method, transformer_blocks
from lmtune.model import count_parameters
from lmtune.tasks import TASKS


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


def test_every_method_tag_has_a_function_and_its_tasks():
    from lmtune.config import METHOD_SECTIONS

    assert (
        set(METHODS)
        == set(METHOD_SECTIONS)
        == {*("full", "freeze", "lora", "dora", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "adapters")}
    )
    assert all(name in TASKS["sft"].methods for name in METHODS)


# --- the contract matrix: every method that runs on CPU, through the real finetune API ----------------------

CPU_METHODS = {
    "full": {"name": "full"},
    "freeze": {"name": "freeze", "train_last_layers": 1},
    "lora": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "dora": {"name": "dora", "r": 4, "alpha": 8, "dropout": 0.1},
    "ia3": {"name": "ia3"},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 6, "init_text": "Answer the question"},
    "prefix_tuning": {"name": "prefix_tuning", "num_virtual_tokens": 6},
    "prefix_projection": {
        "name": "prefix_tuning",
        "num_virtual_tokens": 6,
        "projection": True,
        "projection_hidden": 16,
    },
    "adapters": {"name": "adapters", "bottleneck": 8, "dropout": 0.1},
}
# Methods that train few parameters need a larger step to move the loss within 4 steps.
LEARNING_RATES = {"ia3": 5e-2, "prompt_tuning": 5e-2, "prefix_tuning": 3e-2, "prefix_projection": 1e-2}


def expected_trainable(model: torch.nn.Module, method: dict) -> int:
    """The trainable-parameter count of a method, computed from the base model's shapes (the papers' formulas)."""
    config = model.config
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv = (getattr(config, "num_key_value_heads", None) or heads) * (
        getattr(config, "head_dim", None) or hidden // heads
    )
    name, shapes = method["name"], linear_shapes(model)
    if name == "full":
        return sum(p.numel() for p in model.parameters())
    if name == "freeze":
        return sum(p.numel() for p in transformer_blocks(model)[-method["train_last_layers"] :].parameters())
    if name == "lora":
        return lora_count(shapes, method["r"])
    if name == "dora":  # + a magnitude per output feature of each adapted layer
        return lora_count(shapes, method["r"]) + sum(fan_out for _, fan_out in shapes.values())
    if name == "ia3":  # a vector per targeted layer: on the output, or on the input of the MLP's last layer
        if config.model_type == "llama":
            out = {n: s for n, s in shapes.items() if n.endswith(("k_proj", "v_proj"))}
            ff = {n: s for n, s in shapes.items() if n.endswith("down_proj")}
        else:  # gpt2: c_attn (q, k and v in one) and mlp.c_proj
            out = {n: s for n, s in shapes.items() if n.endswith("c_attn")}
            ff = {n: s for n, s in shapes.items() if n.endswith("mlp.c_proj")}
        return sum(o for _, o in out.values()) + sum(i for i, _ in ff.values())
    n = method.get("num_virtual_tokens", 0)
    if name == "prompt_tuning":
        return n * hidden
    if name == "prefix_tuning":  # a key and a value per virtual token and layer (kv heads x head dim under GQA)
        if not method.get("projection"):
            return n * layers * 2 * kv
        m = method["projection_hidden"]  # embedding n x kv, then Linear(kv, m) and Linear(m, layers·2·kv)
        return n * kv + (kv * m + m) + (m * layers * 2 * kv + layers * 2 * kv)
    if name == "adapters":  # Linear(h, r) and Linear(r, h) with biases, after each block's MLP
        r = method["bottleneck"]
        return layers * (2 * hidden * r + r + hidden)
    raise AssertionError(name)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("key", list(CPU_METHODS))
def test_every_method_trains_saves_loads_and_counts_exactly(tmp_path, request, key, arch):
    from support import chat_record, make_config, write_jsonl

    from lmtune.api import estimate, finetune
    from lmtune.config import ModelConfig
    from lmtune.evaluate.generate import generate
    from lmtune.export import load_tuned
    from lmtune.model import load_model

    method = CPU_METHODS[key]
    model_name = "preset:tiny-chat" if arch == "llama" else str(request.getfixturevalue("gpt2_dir"))
    data = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(40)])
    cfg = make_config(data, method=method, model={"name": model_name}, train={"lr": LEARNING_RATES.get(key, 3e-3)})
    cfg["forgetting"] = {"measure": False}
    run = tmp_path / "run"
    summary = finetune(cfg, output_dir=str(run)).summary

    # The loss falls, on the same held-out examples before and after (4 single-batch train losses are noisy).
    assert summary["val_loss_after"] < summary["val_loss_before"], summary

    # Trainable-parameter counts are exact, in the run and in the pre-flight estimate.
    base = load_model(ModelConfig(name=model_name))
    expected = expected_trainable(base, method)
    assert summary["trainable_parameters"] == expected
    assert estimate(cfg).trainable_params == expected

    # save -> load_tuned gives the trained model: the same logits as the base with the method applied and the
    # trained weights (the last checkpoint's) put back.
    trained = apply_method(base, load_config_method(method))
    weights = load_file(str(run / "checkpoints" / "step-000004" / "trainable.safetensors"))
    params = dict(trained.named_parameters())
    assert set(weights) == {n for n, p in params.items() if p.requires_grad}
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w)
    loaded, tokenizer, _ = load_tuned(run)
    ids = torch.tensor([tokenizer("What is 3 plus 4? It is 7.")["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = trained.eval()(input_ids=ids, attention_mask=mask, use_cache=False).logits
        got = loaded(input_ids=ids, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # The loaded model holds what was saved: with a projection, peft saves the prefix it computes, not the MLP.
    saved = expected_trainable(base, {**method, "projection": False}) if method.get("projection") else 0
    base_total = count_parameters(load_model(ModelConfig(name=model_name)))[1]
    assert count_parameters(loaded)[1] == (base_total + saved if saved else count_parameters(trained)[1])

    # Generation goes through the loaded model (virtual tokens and all).
    assert isinstance(generate(run, prompt="What is 3 plus 4?", max_new_tokens=4, loaded=(loaded, tokenizer, _)), str)


def load_config_method(method: dict):
    from lmtune.config import METHOD_SECTIONS

    return METHOD_SECTIONS[method["name"]](**method)


def test_prompt_tuning_loss_scores_only_the_real_tokens(tiny_model):
    """Prompt tuning's logits are longer than the labels by the virtual tokens; causal_lm_loss drops those, and
    agrees with peft's own loss (which pads the labels with -100 for them)."""
    from lmtune.config import PromptTuningMethod
    from lmtune.train.objectives import causal_lm_loss

    model = apply_method(tiny_model, PromptTuningMethod(num_virtual_tokens=5))
    ids = torch.tensor([[1, 276, 201, 74, 75, 2], [1, 276, 201, 74, 75, 2]])
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, use_cache=False)
    assert out.logits.shape[1] == ids.shape[1] + 5
    loss, n = causal_lm_loss(out.logits, labels)
    assert n == 2 * 3
    torch.testing.assert_close(loss / n, out.loss, rtol=1e-5, atol=1e-6)


def test_qlora_builds_its_bitsandbytes_config():
    from lmtune.config import QloraMethod
    from lmtune.methods import bnb_config

    four = bnb_config(QloraMethod(quant_type="nf4", double_quant=True, compute_dtype="bfloat16"))
    assert four.load_in_4bit and not four.load_in_8bit
    assert four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    fp4 = bnb_config(QloraMethod(quant_type="fp4", double_quant=False, compute_dtype="float16"))
    assert fp4.bnb_4bit_quant_type == "fp4" and not fp4.bnb_4bit_use_double_quant
    assert fp4.bnb_4bit_compute_dtype == torch.float16
    eight = bnb_config(QloraMethod(bits=8))
    assert eight.load_in_8bit and not eight.load_in_4bit


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_qlora_without_cuda_is_a_clear_error_before_any_weight_loads(tmp_path, monkeypatch, gpt2_dir):
    from support import chat_record, make_config, write_jsonl

    import lmtune.api.setup as setup_api
    from lmtune.api import finetune
    from lmtune.methods import quantization_config

    with pytest.raises(LmtuneError, match="needs a CUDA GPU") as info:
        quantization_config(QloraMethod())
    assert "method: lora" in info.value.hint
    assert quantization_config(LoraMethod()) is None

    loads = []
    monkeypatch.setattr(setup_api, "load_model", lambda *a, **k: loads.append(a))
    data = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(10)])
    cfg = make_config(data, method={"name": "qlora", "bits": 4}, model={"name": str(gpt2_dir)})
    with pytest.raises(LmtuneError, match=r"qlora.*CUDA"):
        finetune(cfg, output_dir=str(tmp_path / "run"))
    assert loads == []


def test_qlora_counts_like_lora_in_the_estimate(tiny_model):
    """On the meta model (no quantization) qlora is LoRA: the estimate's trainable count is LoRA's."""
    shapes = linear_shapes(tiny_model)
    assert count_parameters(apply_method(tiny_model, QloraMethod(r=4)))[0] == lora_count(shapes, 4)


@pytest.mark.parametrize("name", ["prompt_tuning", "prefix_tuning"])
def test_virtual_token_methods_refuse_packing(name):
    from lmtune.config import load_config

    with pytest.raises(LmtuneError, match=r"data\.packing: method .*virtual tokens"):
        load_config({"data": {"train": "x.jsonl", "packing": True}, "method": name})


def test_a_method_refuses_a_task_it_does_not_support(tmp_path):
    from lmtune.api.setup import task_of
    from lmtune.config import RunConfig

    cfg = RunConfig.model_validate(
        {"task": "dpo", "method": {"name": "prompt_tuning"}, "data": {"train": str(tmp_path / "x.jsonl")}}
    )
    with pytest.raises(LmtuneError, match="does not support task 'dpo'"):
        task_of(cfg)
    lora = RunConfig.model_validate({"task": "dpo", "method": {"name": "lora"}, "data": {"train": "x.jsonl"}})
    assert task_of(lora).name == "dpo"  # lora does support dpo


def test_adapters_start_as_the_base_model(tiny_model):
    from lmtune.config import AdaptersMethod

    ids = torch.tensor([[1, 276, 201, 74, 75, 2]])
    with torch.no_grad():
        before = tiny_model.eval()(input_ids=ids).logits
        after = apply_method(tiny_model, AdaptersMethod(bottleneck=4)).eval()(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert trainable_names(tiny_model) and all(".bottleneck_adapter." in n for n in trainable_names(tiny_model))
