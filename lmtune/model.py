"""Load the tokenizer and the base model for a run: hub id, local directory, or a built-in preset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmtune.config import ModelConfig
from lmtune.errors import LmtuneError
from lmtune.rope import apply_rope_scaling
from lmtune.tokenizer import is_preset, load_error, load_tokenizer, source

# A preset has no weights file: it is initialised from this seed, so every run starts from the same base model.
PRESET_INIT_SEED = 0

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(
    cfg: ModelConfig,
    kind: str = "causal",
    *,
    quantization: Any = None,
    labels: Sequence[str] = (),
    pad_token_id: int | None = None,
    meta: bool = False,
) -> PreTrainedModel:
    """The base model of a run in the configured dtype, of the class its task trains (`kind`, the task entry's
    `model`): a causal LM, an encoder-decoder (seq2seq), a model with a sequence-classification head for
    `labels` (classifier), with a token-classification head (token_classifier), or with one score output
    (reward). Presets are built from their config with a fixed seed.

    `quantization` (a transformers quantization config, e.g. qlora's BitsAndBytesConfig) quantizes the weights as
    they load; a preset has no weights to load, so it cannot be quantized. `meta`: built on the meta device from
    the config alone (shapes, dtypes and tying, no memory, no weights read), for `lmtune estimate`.
    """
    if kind == "seq2seq":
        return load_seq2seq_model(cfg, meta=meta)
    if kind in ("classifier", "token_classifier", "reward"):
        names = REWARD_LABELS if kind == "reward" else labels
        return load_classifier(cfg, names, pad_token_id, per_token=kind == "token_classifier", meta=meta)
    dtype = _DTYPES[cfg.dtype]
    kwargs: dict[str, Any] = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    if quantization is not None and not meta:
        if is_preset(cfg.name):
            raise LmtuneError(
                f"method qlora: {cfg.name} is built from its config and has no weights to quantize as they load",
                hint="use a model directory or hub id (e.g. save the preset with save_pretrained first)",
            )
        kwargs["quantization_config"] = quantization
    if is_preset(cfg.name) or meta:
        config = _read_config(cfg)
        apply_dropout(config, cfg.dropout)
        apply_rope_scaling(config, cfg)
        model = _from_config(AutoModelForCausalLM, config, dtype, meta, **kwargs)
    else:
        model = _from_pretrained(AutoModelForCausalLM, cfg, **kwargs)
    return _checkpointing(model, cfg)


# A reward model is a sequence classifier with one output: the score of a text.
REWARD_LABELS = ("reward",)


def _read_config(cfg: ModelConfig, **options: Any) -> Any:
    try:
        return AutoConfig.from_pretrained(
            source(cfg.name), revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **options
        )
    except (OSError, ValueError) as e:
        raise load_error("model", cfg.name, e) from None


def _from_config(auto_class: Any, config: Any, dtype: torch.dtype, meta: bool, **kwargs: Any) -> PreTrainedModel:
    """A model built from its config: on the meta device, or (a preset) initialised from the fixed seed."""
    if meta:
        with torch.device("meta"):
            return auto_class.from_config(config, dtype=dtype, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRESET_INIT_SEED)
        return auto_class.from_config(config, dtype=dtype, **kwargs)


# The dropout probabilities model configs name (Llama/Qwen, GPT-2, BERT/MiniLM, T5, BART, ...): `model.dropout` sets
# every one a config has, before the model is built (modules read them at construction).
DROPOUT_FIELDS = (
    "attention_dropout",
    "hidden_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "activation_dropout",
    "dropout_rate",
    "classifier_dropout",
)


def apply_dropout(config: Any, p: float | None) -> list[str]:
    """Set `model.dropout` on every dropout field the config has; returns their names (none when p is None)."""
    if p is None:
        return []
    found = [k for k in DROPOUT_FIELDS if hasattr(config, k)]
    for key in found:
        setattr(config, key, p)
    return found


def _from_pretrained(auto_class: Any, cfg: ModelConfig, **kwargs: Any) -> PreTrainedModel:
    """Weights from the hub or a local directory, in the configured dtype, from safetensors only."""
    if cfg.dropout is not None or cfg.rope_scaling is not None:
        if "config" not in kwargs:
            try:
                kwargs["config"] = AutoConfig.from_pretrained(
                    cfg.name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
                )
            except (OSError, ValueError) as e:
                raise load_error("model", cfg.name, e) from None
        apply_dropout(kwargs["config"], cfg.dropout)
        apply_rope_scaling(kwargs["config"], cfg)
    try:
        return auto_class.from_pretrained(
            cfg.name,
            revision=cfg.revision,
            dtype=_DTYPES[cfg.dtype],
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=True,  # never unpickle weights from the hub
            **kwargs,
        )
    except (OSError, ValueError) as e:
        raise load_error("model", cfg.name, e) from None


def _checkpointing(model: PreTrainedModel, cfg: ModelConfig) -> PreTrainedModel:
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False
    return model


def load_seq2seq_model(cfg: ModelConfig, *, meta: bool = False) -> PreTrainedModel:
    """An encoder-decoder (T5, BART, ...) for task seq2seq, weights from safetensors only.

    The config is read first so that a decoder-only model is refused in words rather than by transformers'
    "Unrecognized configuration class" error.
    """
    if is_preset(cfg.name):
        raise LmtuneError(
            f"model.name: task seq2seq needs an encoder-decoder model, and {cfg.name} is a decoder-only preset",
            hint="use a seq2seq model such as google/flan-t5-base or facebook/bart-base (or a local directory of one)",
        )
    config = _read_config(cfg)
    if not getattr(config, "is_encoder_decoder", False):
        raise LmtuneError(
            f"model.name: task seq2seq needs an encoder-decoder model, and {cfg.name} is decoder-only "
            f"({config.model_type})",
            hint="use a seq2seq model such as google/flan-t5-base, or task sft for a decoder-only model",
        )
    kwargs: dict[str, Any] = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    if meta:
        apply_dropout(config, cfg.dropout)
        apply_rope_scaling(config, cfg)
        return _checkpointing(_from_config(AutoModelForSeq2SeqLM, config, _DTYPES[cfg.dtype], True, **kwargs), cfg)
    return _checkpointing(_from_pretrained(AutoModelForSeq2SeqLM, cfg, **kwargs), cfg)


def is_classifier(model: Any) -> bool:
    """Whether the model (or the model under a peft wrapper) is a transformers sequence classifier."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


def is_token_classifier(model: Any) -> bool:
    """Whether the model (or the model under a peft wrapper) is a transformers token classifier (NER)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForTokenClassification")


def load_classifier(
    cfg: ModelConfig,
    labels: Sequence[str],
    pad_token_id: int | None = None,
    *,
    per_token: bool = False,
    meta: bool = False,
) -> PreTrainedModel:
    """An encoder (BERT, MiniLM, ...) or decoder with a sequence-classification head for `labels` (task
    classification). The label names go into the model config (id2label/label2id), so the saved model keeps them.

    A decoder classifies from the last non-padding token, which it finds by the pad token id: the config gets the
    tokenizer's. The head is new (randomly initialised, seeded by the run's seed) unless the checkpoint has one
    for the same labels. `per_token`: a token-classification head instead (task token_classification: one tag
    per token, `labels` the tag names).
    """
    task = "token_classification" if per_token else "classification"
    auto = AutoModelForTokenClassification if per_token else AutoModelForSequenceClassification
    if not labels:
        raise LmtuneError(f"task {task}: no labels in the training data", hint="check data.columns")
    id2label = dict(enumerate(labels))
    options: dict[str, Any] = dict(
        num_labels=len(labels), id2label=id2label, label2id={name: i for i, name in id2label.items()}
    )
    if pad_token_id is not None:
        options["pad_token_id"] = pad_token_id
    kwargs: dict[str, Any] = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    config = _read_config(cfg, **options)
    if getattr(config, "is_encoder_decoder", False):
        raise LmtuneError(
            f"model.name: task {task} needs an encoder or a decoder model, and {cfg.name} is an encoder-decoder",
            hint="use an encoder such as sentence-transformers/all-MiniLM-L6-v2 or bert-base-uncased",
        )
    if is_preset(cfg.name) or meta:
        apply_dropout(config, cfg.dropout)
        apply_rope_scaling(config, cfg)
        model = _from_config(auto, config, _DTYPES[cfg.dtype], meta, **kwargs)
    else:
        # A checkpoint's head for another label count (e.g. a NER model's 9 tags) is replaced by a new one.
        model = _from_pretrained(auto, cfg, config=config, ignore_mismatched_sizes=True, **kwargs)
    return _checkpointing(model, cfg)


def load_generation_model(
    name: str, *, trust_remote_code: bool = False, dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model to generate with, and its tokenizer: a causal LM, or a seq2seq model (T5, BART) when its config
    says ``is_encoder_decoder``. Hub id, local directory or preset; weights from safetensors only.

    Augmentation (paraphrase, back-translation) and evaluation name models that are not the run's base model,
    and translation models are often encoder-decoders, which ``load_model`` does not load.
    """
    cfg = ModelConfig(name=name, trust_remote_code=trust_remote_code, dtype=dtype)
    try:
        config = AutoConfig.from_pretrained(source(cfg.name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise load_error("model", name, e) from None
    tokenizer = load_tokenizer(cfg)
    if not getattr(config, "is_encoder_decoder", False):
        model = load_model(cfg)
    elif is_preset(cfg.name):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PRESET_INIT_SEED)
            model = AutoModelForSeq2SeqLM.from_config(config, dtype=_DTYPES[dtype])
    else:
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(
                cfg.name, dtype=_DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True
            )
        except (OSError, ValueError) as e:
            raise load_error("model", name, e) from None
    return model.eval(), tokenizer


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counting tied weights once."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
