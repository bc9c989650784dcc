"""The `method:` sections of the run configuration, one per fine-tuning method (see `lmtune.methods`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from lmtune.config.base import Section as _Section


class FullMethod(_Section):
    name: Literal["full"] = "full"


class LoraMethod(_Section):
    name: Literal["lora"] = "lora"
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt; 'all-linear' = every linear layer but the output head."
    )
    modules_to_save: list[str] = Field(
        default_factory=list, description="Modules trained in full alongside the adapter (e.g. lm_head)."
    )


class FreezeMethod(_Section):
    name: Literal["freeze"] = "freeze"
    train_last_layers: int = Field(2, ge=0, description="Train the last N transformer blocks; the rest stay frozen.")
    train_modules: list[str] = Field(
        default_factory=list,
        description="Also train parameters whose name matches one of these glob patterns (e.g. 'lm_head.*').",
    )


class DoraMethod(LoraMethod):
    """DoRA (Liu et al. 2024): LoRA on the direction of each weight plus a trained magnitude per output feature."""

    name: Literal["dora"] = "dora"  # type: ignore[assignment]


class QloraMethod(LoraMethod):
    """QLoRA (Dettmers et al. 2023): LoRA on a base quantized to 4 or 8 bits as it loads (bitsandbytes, CUDA)."""

    name: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    bits: Literal[4, 8] = Field(4, description="Bits per base weight: 4 (NF4/FP4) or 8 (LLM.int8).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; nf4 is QLoRA's NormalFloat.")
    double_quant: bool = Field(
        True, description="Quantize the quantization constants too (4-bit; saves ~0.4 bit/weight)."
    )
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Dtype the 4-bit weights are dequantized to for each matmul."
    )


class Ia3Method(_Section):
    name: Literal["ia3"] = "ia3"
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description="Modules whose activations get a learned scaling vector; None: peft's choice for the "
        "architecture (Llama: k_proj, v_proj, down_proj; GPT-2: c_attn, mlp.c_proj).",
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="Those of target_modules scaled on their input rather than their output (the MLP's last "
        "layer in (IA)^3); None: peft's choice for the architecture.",
    )


class PromptTuningMethod(_Section):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    num_virtual_tokens: int = Field(20, gt=0, description="Trained embeddings prepended to every input.")
    init_text: str | None = Field(
        None,
        description="Initialise the virtual tokens from the embeddings of this text (repeated or cut to "
        "num_virtual_tokens tokens), e.g. 'Answer the question:'; None: random initialisation.",
    )


class PrefixTuningMethod(_Section):
    name: Literal["prefix_tuning"] = "prefix_tuning"
    num_virtual_tokens: int = Field(20, gt=0, description="Trained key/value positions prepended in every layer.")
    projection: bool = Field(
        False,
        description="Train the prefix through a two-layer MLP (Li & Liang 2021's reparametrisation): more "
        "parameters during training, steadier optimisation.",
    )
    projection_hidden: int = Field(512, gt=0, description="Hidden width of that MLP (when projection is on).")


class AdaptersMethod(_Section):
    name: Literal["adapters"] = "adapters"
    bottleneck: int = Field(16, gt=0, description="Bottleneck width r: each adapter is hidden -> r -> hidden.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on each adapter's input.")
    activation: Literal["relu", "gelu", "silu"] = Field("relu", description="Nonlinearity inside the bottleneck.")


MethodConfig = Annotated[
    FullMethod
    | LoraMethod
    | FreezeMethod
    | DoraMethod
    | QloraMethod
    | Ia3Method
    | PromptTuningMethod
    | PrefixTuningMethod
    | AdaptersMethod,
    Field(discriminator="name"),
]
METHOD_SECTIONS: dict[str, type[_Section]] = {
    "full": FullMethod,
    "lora": LoraMethod,
    "freeze": FreezeMethod,
    "dora": DoraMethod,
    "qlora": QloraMethod,
    "ia3": Ia3Method,
    "prompt_tuning": PromptTuningMethod,
    "prefix_tuning": PrefixTuningMethod,
    "adapters": AdaptersMethod,
}
