from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from lmtune.config import ModelConfig
from lmtune.errors import LmtuneError
from lmtune.model import count_parameters, load_model, load_tokenizer
from lmtune.tokenizer import PRESETS_DIR


def test_preset_loads_the_same_weights_whatever_the_global_seed():
    torch.manual_seed(1)
    a = load_model(ModelConfig(name="preset:tiny-chat"))
    torch.manual_seed(2)
    b = load_model(ModelConfig(name="preset:tiny-chat"))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    # the weights are random, not a constant: the check above compares something
    assert a.model.embed_tokens.weight.std() > 0


def test_loading_a_preset_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    load_model(ModelConfig(name="preset:tiny-chat"))
    assert torch.equal(torch.rand(4), expected)


def test_preset_is_the_shipped_llama(tiny_model, tokenizer):
    assert isinstance(tiny_model, LlamaForCausalLM)
    assert tiny_model.config.num_hidden_layers == 2
    assert tiny_model.config.hidden_size <= 64
    assert tiny_model.config.vocab_size == len(tokenizer)
    assert next(tiny_model.parameters()).dtype == torch.float32


def test_dtype_is_applied():
    model = load_model(ModelConfig(name="preset:tiny-chat", dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_gradient_checkpointing_is_switched_on():
    model = load_model(ModelConfig(name="preset:tiny-chat", gradient_checkpointing=True))
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert model.config.use_cache is False


def test_unknown_preset_lists_the_presets():
    with pytest.raises(LmtuneError) as info:
        load_model(ModelConfig(name="preset:huge"))
    assert "unknown preset 'preset:huge'" in str(info.value)
    assert "tiny-chat" in info.value.hint
    shipped = sorted(p.name for p in PRESETS_DIR.iterdir() if (p / "config.json").is_file())
    assert info.value.hint == f"built-in presets: {', '.join(shipped)}"
    with pytest.raises(LmtuneError, match="unknown preset"):
        load_tokenizer(ModelConfig(name="preset:huge"))


@pytest.mark.parametrize("loader", [load_model, load_tokenizer])
def test_missing_local_path_is_reported_with_a_hint(tmp_path, loader):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(LmtuneError) as info:
        loader(ModelConfig(name=str(missing)))
    assert str(missing) in info.value.message
    assert "no such directory" in info.value.message
    assert info.value.hint and "directory" in info.value.hint


def test_directory_without_a_model_is_reported_with_a_hint(tmp_path):
    with pytest.raises(LmtuneError) as info:
        load_model(ModelConfig(name=str(tmp_path)))
    assert str(tmp_path) in info.value.message
    assert "config.json" in info.value.hint


def test_tokenizer_has_a_pad_token(tokenizer):
    assert tokenizer.pad_token is not None
    assert tokenizer.pad_token_id is not None
    assert tokenizer.is_fast


def test_pad_token_defaults_to_eos_when_missing(tmp_path, tokenizer):
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    reloaded = load_tokenizer(ModelConfig(name=str(tmp_path)))
    assert reloaded.pad_token == reloaded.eos_token == "<|im_end|>"
    assert reloaded.pad_token_id == reloaded.eos_token_id


def test_tokenizer_can_come_from_elsewhere(gpt2_dir):
    tok = load_tokenizer(ModelConfig(name="org/does-not-matter", tokenizer=str(gpt2_dir)))
    assert tok.eos_token == "<|im_end|>"


def test_local_gpt2_loads(gpt2_dir, gpt2_model):
    assert isinstance(gpt2_model, GPT2LMHeadModel)
    assert gpt2_model.config.n_layer == 2
    assert load_tokenizer(ModelConfig(name=str(gpt2_dir))).eos_token == "<|im_end|>"


def llama_parameter_count(c) -> int:
    """The Llama parameter count from its config alone (untied head, no biases)."""
    h, inter, v = c.hidden_size, c.intermediate_size, c.vocab_size
    head_dim = c.head_dim
    q = o = h * c.num_attention_heads * head_dim
    k = vv = h * c.num_key_value_heads * head_dim
    per_layer = q + k + vv + o + 3 * h * inter + 2 * h
    return v * h + c.num_hidden_layers * per_layer + h + v * h


def gpt2_parameter_count(c) -> int:
    """The GPT-2 parameter count from its config alone (tied head counted once)."""
    d = c.n_embd
    per_layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return c.vocab_size * d + c.n_positions * d + c.n_layer * per_layer + 2 * d


def test_count_parameters_is_exact_for_llama(tiny_model):
    expected = llama_parameter_count(tiny_model.config)
    assert count_parameters(tiny_model) == (expected, expected)
    for p in tiny_model.model.layers[0].parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in tiny_model.model.layers[0].parameters())
    assert count_parameters(tiny_model) == (expected - frozen, expected)


def test_count_parameters_counts_tied_weights_once(gpt2_model):
    assert gpt2_model.lm_head.weight is gpt2_model.transformer.wte.weight
    expected = gpt2_parameter_count(gpt2_model.config)
    assert count_parameters(gpt2_model) == (expected, expected)


def test_model_dropout_sets_every_dropout_field_before_the_model_is_built(gpt2_dir):
    """model.dropout reaches the modules: GPT-2's nn.Dropout layers and a Llama's attention dropout."""
    gpt2 = load_model(ModelConfig(name=str(gpt2_dir), dropout=0.2))
    assert (gpt2.config.resid_pdrop, gpt2.config.embd_pdrop, gpt2.config.attn_pdrop) == (0.2, 0.2, 0.2)
    drops = [m.p for m in gpt2.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and set(drops) == {0.2}
    assert {m.p for m in load_model(ModelConfig(name=str(gpt2_dir))).modules() if isinstance(m, torch.nn.Dropout)} == {
        0.1
    }  # GPT-2's own default when unset
    llama = load_model(ModelConfig(name="preset:tiny-chat", dropout=0.3))
    assert llama.config.attention_dropout == 0.3
    assert {layer.self_attn.attention_dropout for layer in llama.model.layers} == {0.3}
