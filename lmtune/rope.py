"""Longer context: `model.rope_scaling` written into a model config, and the context length a config allows.

transformers computes the scaled rotary embeddings (`modeling_rope_utils`: linear, dynamic NTK, YaRN) from the
config's ``rope_parameters``; lmtune only sets them, refusing in words a model without RoPE or one whose RoPE is
scaled already, and keeps the lengths right: linear and YaRN read ``max_position_embeddings`` as the extended length
(YaRN takes the trained one as ``original_max_position_embeddings``), dynamic NTK as the trained length it scales
past at run time. The config is saved with the tuned model, so inference scales positions as training did.
"""

from __future__ import annotations

from typing import Any

from lmtune.config import ModelConfig
from lmtune.errors import LmtuneError


def apply_rope_scaling(config: Any, cfg: ModelConfig) -> None:
    """Set `cfg.rope_scaling` on the model config before the model is built (nothing when it is None)."""
    rope = cfg.rope_scaling
    if rope is None:
        return
    params = getattr(config, "rope_parameters", None)
    kind = getattr(config, "model_type", "?")
    if not isinstance(params, dict) or "rope_type" not in params:
        per_layer = isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values())
        what = "sets its RoPE per layer type, which lmtune does not scale" if per_layer else "has no RoPE to scale"
        raise LmtuneError(
            f"model.rope_scaling: {cfg.name} ({kind}) {what}",
            hint="rope_scaling applies to RoPE models with one RoPE setting (Llama, Qwen2, Mistral, Phi-3, ...); "
            "remove model.rope_scaling",
        )
    base = rope.original_max_position_embeddings or config.max_position_embeddings
    wanted = {**params, "rope_type": rope.type, "factor": float(rope.factor)}
    if rope.type == "yarn":
        wanted["original_max_position_embeddings"] = base
    if params == wanted:
        return  # applied already (a config handed on to from_pretrained)
    if params.get("rope_type", "default") != "default":
        raise LmtuneError(
            f"model.rope_scaling: {cfg.name} scales its RoPE already ({params['rope_type']}, factor "
            f"{params.get('factor')}): its max_position_embeddings ({config.max_position_embeddings}) is the "
            "extended length",
            hint="remove model.rope_scaling, and set data.max_length up to that length",
        )
    config.rope_parameters = wanted
    if rope.type != "dynamic":
        config.max_position_embeddings = int(base * rope.factor)
    config.validate_rope()


def context_length(config: Any) -> int | None:
    """The most positions a model config allows: its max_position_embeddings (n_positions for GPT-2), times the
    factor of a dynamic RoPE scaling, which keeps the trained length there and stretches past it at run time."""
    length = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    params = getattr(config, "rope_parameters", None)
    if length and isinstance(params, dict) and params.get("rope_type") == "dynamic":
        return int(length * float(params.get("factor") or 1.0))
    return length


def context_note(model: Any, cfg: ModelConfig, longest: int) -> tuple[str | None, bool]:
    """What the run's longest row means for the model's positions (a peft-wrapped model is read through): a note
    (None when the rows fit the base's trained length) and whether rows go past what the model allows even with
    its scaling."""
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    allowed = context_length(base_model.config)
    if not allowed:
        return None, False
    rope = cfg.rope_scaling
    if rope is None:
        if longest <= allowed:
            return None, False
        factor = -(-longest // allowed)
        return (
            f"context: rows reach {longest} tokens, past the model's {allowed} positions; set model.rope_scaling "
            f"(e.g. {{type: linear, factor: {factor}}}) or lower data.max_length",
            True,
        )
    base = rope.original_max_position_embeddings or round(allowed / rope.factor)
    if longest <= base:
        return None, False
    past = longest > allowed
    reach = "past even that" if past else "within it"
    return (
        f"context: rows reach {longest} tokens, {longest / base:.1f}x the base's {base} positions; rope_scaling "
        f"{rope.type} x{rope.factor:g} stretches them to {allowed} ({reach})",
        past,
    )
