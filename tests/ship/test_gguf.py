"""`lmtune export --format gguf`: the gguf library reads back what was written (names, layout, tokenizer, chat
template); a slow test runs it in llama.cpp (llama-cpp-python) on the real stories260K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from lmtune.errors import LmtuneError
from lmtune.export import load_tuned
from lmtune.ship import export_model
from lmtune.ship.export import merged

gguf = pytest.importorskip("gguf")


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    reader = gguf.GGUFReader(path)
    tensors = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = np.asarray(data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        fields[key] = field.contents()
    return tensors, fields


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize(("quant", "tol"), [("f16", 2e-3), ("bf16", 1.6e-2), ("q8_0", 1.6e-2)])
def test_gguf_holds_the_merged_weights_and_tokenizer(tmp_path, make_run, quant, tol) -> None:
    run = make_run("sft", "lora")
    result = export_model(run, tmp_path / quant, format="gguf", quant=quant)
    path = result.out / "model.gguf"
    print(f"{quant}: {path.stat().st_size / 1e6:.3f} MB")
    tensors, fields = _read(path)
    model, tok, _ = load_tuned(run)
    model = merged(model)
    cfg = model.config
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == cfg.num_hidden_layers
    assert fields["tokenizer.ggml.model"] == "gpt2" and len(fields["tokenizer.ggml.tokens"]) == cfg.vocab_size
    assert fields["tokenizer.chat_template"] == tok.chat_template
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    state = model.state_dict()
    q = _unpermute(tensors["blk.1.attn_q.weight"], cfg.num_attention_heads)
    k = _unpermute(tensors["blk.0.attn_k.weight"], cfg.num_key_value_heads)
    pairs = [(q, "model.layers.1.self_attn.q_proj.weight"), (k, "model.layers.0.self_attn.k_proj.weight"),
             (tensors["token_embd.weight"], "model.embed_tokens.weight"), (tensors["output.weight"], "lm_head.weight"),
             (tensors["blk.0.ffn_down.weight"], "model.layers.0.mlp.down_proj.weight"),
             (tensors["output_norm.weight"], "model.norm.weight")]  # fmt: skip
    for got, name in pairs:
        want = state[name].numpy()
        assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max()), name
    modelfile = (result.out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf") and "<|im_start|>{{ .Role }}" in modelfile
    assert f'PARAMETER stop "{tok.eos_token}"' in modelfile


def test_q8_0_is_smaller_than_f16(tmp_path, make_run) -> None:
    run = make_run("sft", "lora")
    sizes = {q: (export_model(run, tmp_path / q, format="gguf", quant=q).out / "model.gguf").stat().st_size
             for q in ("f16", "q8_0")}  # fmt: skip
    assert sizes["q8_0"] < sizes["f16"]


def test_gguf_refuses_other_architectures(tmp_path, make_run, gpt2_dir) -> None:
    run = make_run("sft", "lora", str(gpt2_dir))
    with pytest.raises(LmtuneError, match="Llama-family"):
        export_model(run, tmp_path / "out", format="gguf")


# Text llama.cpp must split into the same tokens as transformers. Not text that starts with a space: for a
# Metaspace tokenizer (stories260K's) transformers adds no "▁" before it while SentencePiece and llama.cpp do.
TEXTS = ["Once upon a time, there was a little girl named Lily.", "The sun was hot; they ate ice-cream.",
         "héllo wörld 123 — ok?", 'Tom said, "Why?"\nThen he ran.']  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "model"), [("causal_lm", "/work/shared/models/stories260K"), ("sft", "preset:tiny-chat")],
    ids=["stories260K", "tiny-chat"],
)  # fmt: skip
def test_llama_cpp_tokenizes_and_continues_like_transformers(tmp_path, make_run, task, model) -> None:
    """The real stories260K (Llama byte-fallback vocabulary) and the preset (byte-level BPE), each LoRA-tuned:
    llama.cpp reads the GGUF's vocabulary to the same token ids and continues 3 prompts greedily as transformers
    does (f16: every token; q8_0: at least 90% of them)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    run = make_run(task, "lora", model, lr=1e-3)
    hf_dir = export_model(run, tmp_path / "hf").out
    hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    prompts = ["Once upon a time", "The little girl", "One day, a cat"]
    agreement = {}
    for quant in ("f16", "q8_0"):
        gguf_path = export_model(run, tmp_path / quant, format="gguf", quant=quant).out / "model.gguf"
        llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=128, verbose=False, seed=0)
        same = total = 0
        for text in [*prompts, *TEXTS]:
            ids = tok(text)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=tok.bos_token_id in ids[:1], special=False) == ids, text
        for prompt in prompts:
            ids = tok(prompt)["input_ids"]
            with torch.no_grad():
                want = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids) :].tolist()
            got = []
            for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
                if token == llm.token_eos() or len(got) == len(want):
                    break
                got.append(token)
            if quant == "f16":
                assert got == want, prompt
            same += sum(a == b for a, b in zip(got, want, strict=False))
            total += len(want)
        agreement[quant] = same / total
    print(model, agreement, {q: (tmp_path / q / "model.gguf").stat().st_size for q in ("f16", "q8_0")})
    if task == "causal_lm":  # the preset's random weights give near-ties that 8-bit rounding flips: no bar there
        assert agreement["q8_0"] >= 0.9
