"""The `train` section: the loop's batches, optimizer, schedule, checkpoints and early stopping."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lmtune.config.base import Section as _Section

# Metrics the validation pass computes during training, and whether lower is better: every task's loss and
# perplexity; a classifier's or tagger's accuracy and F1; a preference run's pairwise accuracy and margin.
LOWER_IS_BETTER = {"loss": True, "perplexity": True, "accuracy": False, "f1": False, "margin": False, "rougeL": False}
Metric = Literal["auto", "loss", "perplexity", "accuracy", "f1", "margin", "rougeL"]


class EarlyStoppingConfig(_Section):
    metric: Metric = Field(
        "auto",
        description="Validation metric to watch: 'auto' (train.best_metric: the task's own metric), loss or "
        "perplexity (every task), accuracy or f1 (classification, token_classification), accuracy or margin "
        "(reward, dpo: pairs ranked right), rougeL (sft, seq2seq: answers generated for train.eval_generate "
        "validation examples and scored against theirs). Early stopping is off unless this section is set "
        "(`train.early_stopping: true` takes the defaults); it needs validation data and train.eval_every, and "
        "the run keeps the weights of the best evaluation as its final model.",
    )
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="'min': lower is better; 'max': higher is better; 'auto': the metric's own direction."
    )
    patience: int = Field(
        3, gt=0, description="Stop after this many evaluations in a row without an improvement of min_delta."
    )
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change of the metric that counts as an improvement.")

    @model_validator(mode="after")
    def _mode_fits_metric(self) -> EarlyStoppingConfig:
        lower = LOWER_IS_BETTER.get(self.metric)
        if lower is not None and self.mode != "auto" and (self.mode == "min") != lower:
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
    eval_generate: int = Field(
        32,
        gt=0,
        description="When the watched metric is rougeL: how many validation examples (the first ones) each "
        "evaluation generates answers for, greedily, up to eval.max_new_tokens tokens each.",
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None,
        description="Stop when the validation metric stops improving, and keep the best evaluated weights as the "
        "final model (off by default; `early_stopping: true` uses the defaults). Needs validation data and "
        "train.eval_every.",
    )
    keep: Literal["best", "last"] = Field(
        "best",
        description="Which weights final/ holds when the run has validation data: 'best' the best evaluation's by "
        "train.best_metric (the evaluation before training never counts; the last weights are saved beside, in "
        "last/, when they differ; summary.json's final_weights says which step won and why), 'last' the last "
        "step's. Every evaluation that improves on the best writes the trainable weights to "
        "checkpoints/best-NNNNNN (one kept at a time).",
    )
    best_metric: Metric = Field(
        "auto",
        description="The validation metric that picks the best weights (and that early stopping watches unless it "
        "names its own): 'auto' is the task's own: f1 for token_classification (entity F1), accuracy for "
        "classification and reward (pairs ranked right), loss otherwise (dpo: its loss, as its preference accuracy saturates early); ties on the metric go to the lower loss.",
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

    report_to: list[Literal["tensorboard", "mlflow", "wandb", "trackio"]] = Field(
        default_factory=list,
        description="Experiment trackers that also receive the run's figures (metrics.jsonl stays the record): "
        "per-step train loss, lr, tokens/s and grad norm, the validation metrics, the resolved config as "
        "hyperparameters, and the report and eval table at the end. Through accelerate's trackers; install them "
        "with `pip install 'lmtune[track]'`. TensorBoard writes under <run>/tensorboard; MLflow to "
        "MLFLOW_TRACKING_URI (its default otherwise); W&B to project WANDB_PROJECT (default lmtune; WANDB_MODE=offline "
        "keeps it local).",
    )
    report_group: str | None = Field(
        None,
        description="The group the trackers file the run under (MLflow experiment, W&B group, Trackio project); "
        "default: the run's name. `lmtune tune` sets it to the study's name, so a study's trials log as one group.",
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
