"""GGUF for llama.cpp and Ollama, written with the `gguf` library: its writer, its tensor-name maps, its vocab
readers (gpt2-style byte-level BPE, or Llama's byte-fallback BPE/SentencePiece) and its quantizers.

Supported: Llama-family decoders (llama, mistral: llama.cpp's LLAMA architecture; qwen2: QWEN2). Two things differ
from the Hugging Face layout and are done here: LLAMA's rotary embedding pairs dimensions (i, i+1) where
transformers pairs (i, i + d/2), so q_proj/k_proj rows are permuted per head (QWEN2 uses transformers' layout);
and 1-D tensors (norms, biases) stay float32, as llama.cpp requires.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmtune.errors import LmtuneError

QUANTS = ("f16", "bf16", "q8_0")
# transformers model_type -> (gguf architecture, whether q/k rows are permuted to llama.cpp's rotary layout)
ARCHS = {"llama": ("LLAMA", True), "mistral": ("LLAMA", True), "qwen2": ("QWEN2", False)}
GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"


def write_gguf(model: Any, tokenizer: Any, out: Path, *, quant: str = "f16", name: str = "model") -> Path:
    """Write `out/model.gguf` (and `out/Modelfile` for Ollama) from a merged causal LM and its tokenizer."""
    import gguf

    if quant not in QUANTS:
        raise LmtuneError(f"unknown GGUF quantization {quant!r}", hint=f"use one of: {', '.join(QUANTS)}")
    config = model.config
    kind = getattr(config, "model_type", None)
    if kind not in ARCHS or getattr(config, "is_encoder_decoder", False) or not hasattr(model, "lm_head"):
        raise LmtuneError(
            f"GGUF export supports Llama-family decoders ({', '.join(ARCHS)}); this model is {kind!r}",
            hint="export a Hugging Face model instead (--format hf) and convert it with llama.cpp's own tools",
        )
    arch_name, permute = ARCHS[kind]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GGUF_FILE
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    _metadata(writer, config, name, quant, gguf)
    _vocab(writer, tokenizer, config.vocab_size, gguf)
    tmap = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    for hf_name, tensor in model.state_dict().items():
        if "rotary_emb" in hf_name:
            continue
        if hf_name == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
            continue  # llama.cpp reuses token_embd when there is no output tensor
        new_name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise LmtuneError(f"GGUF export: no llama.cpp name for tensor {hf_name}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if permute and hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif permute and hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        data, qtype = _quantize(data, quant, gguf)
        writer.add_tensor(new_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _modelfile(out, tokenizer)
    return path


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of each head from transformers' half-split rotary order to llama.cpp's interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _quantize(data: np.ndarray, quant: str, gguf: Any) -> tuple[np.ndarray, Any]:
    t = gguf.GGMLQuantizationType
    if data.ndim < 2:
        return data.astype(np.float32), t.F32
    if quant == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[t.Q8_0][0] == 0:
        return gguf.quants.quantize(data, t.Q8_0), t.Q8_0
    if quant == "bf16":
        return gguf.quants.quantize(data, t.BF16), t.BF16
    return data.astype(np.float16), t.F16  # f16, and q8_0's rows too short for its 32-value blocks


def _metadata(writer: Any, config: Any, name: str, quant: str, gguf: Any) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_theta") or getattr(config, "rope_theta", 1e4)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    file_types = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}
    writer.add_file_type(getattr(gguf.LlamaFileType, file_types[quant]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _vocab(writer: Any, tokenizer: Any, vocab_size: int, gguf: Any) -> None:
    """The tokenizer through the gguf library's own readers of a saved tokenizer directory."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        vocab = None
        for reader in (gguf.vocab.BpeVocab, gguf.vocab.LlamaHfVocab):
            try:
                vocab = reader(Path(tmp))
                break
            except (FileNotFoundError, TypeError):
                continue
        if vocab is None:
            raise LmtuneError(
                "GGUF export: the tokenizer is neither byte-level BPE nor Llama's byte-fallback BPE",
                hint="export a Hugging Face model instead (--format hf)",
            )
        tokens, scores, types = [], [], []
        for text, score, kind in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(kind)
        if vocab.tokenizer_model == "llama":
            scores = _merge_scores(Path(tmp) / "tokenizer.json", tokens, scores)
        for i in range(len(tokens), vocab_size):  # the embedding may be padded past the tokenizer's vocabulary
            tokens.append(f"[PAD{i}]".encode())
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
        writer.add_tokenizer_model(vocab.tokenizer_model)
        writer.add_tokenizer_pre(_pre_tokenizer(Path(tmp) / "tokenizer.json", vocab.tokenizer_model))
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(Path(tmp), load_merges=vocab.tokenizer_model == "gpt2", n_vocab=len(tokens))
        special.add_to_gguf(writer, quiet=True)


# Ollama writes templates in Go's template language, not Jinja: ChatML, the most common chat format, is written
# out; for any other template Ollama reads the Jinja one from the GGUF's metadata.
CHATML_TEMPLATE = (
    'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
    '{{ end }}<|im_start|>assistant\n"""'
)


def _pre_tokenizer(tokenizer_json: Path, model: str) -> str:
    """llama.cpp's name for how text is split before BPE: a plain byte-level pre-tokenizer splits with GPT-2's own
    pattern ("gpt-2"); llama.cpp's "default" splits digits differently."""
    pre = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    if model == "gpt2" and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return "default"


def _merge_scores(tokenizer_json: Path, tokens: list[bytes], scores: list[float]) -> list[float]:
    """llama.cpp's "llama" tokenizer merges, at each step, the adjacent pair whose joined token has the highest
    score: a BPE tokenizer's merge order, written as scores (the merge of rank r scores -r). The gguf library's
    reader of a tokenizer.json leaves every score at a placeholder, so tokens would merge in the wrong order."""
    merges = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"].get("merges") or []
    ids = {t.decode("utf-8", errors="replace"): i for i, t in enumerate(tokens)}
    out = [-float(len(merges) + i) for i in range(len(scores))]  # not made by a merge: below every merge
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        i = ids.get(left + right)
        if i is not None and out[i] < -rank:
            out[i] = -float(rank)
    return out


def _modelfile(out: Path, tokenizer: Any) -> None:
    """Ollama's Modelfile: the GGUF beside it, the chat template, the end-of-turn token as a stop."""
    lines = [f"FROM ./{GGUF_FILE}"]
    if "<|im_start|>" in (getattr(tokenizer, "chat_template", None) or ""):
        lines.append(CHATML_TEMPLATE)
    if tokenizer.eos_token:
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    (out / MODELFILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
