"""What the alignment tasks share: the run directory, trl's training arguments from `train.*`, trl's logs as
metrics.jsonl rows, resume from trl's checkpoints, and the end of a run (final model, summary, report)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from lmtune.config import RunConfig, dump_config
from lmtune.data.preferences import AlignSplits, pairs_use_chat
from lmtune.data.tokenize import setup_chat_template
from lmtune.errors import LmtuneError
from lmtune.evaluate.diagnose import diagnose
from lmtune.export import check_same_config, needs_base_copy, save_base, save_final
from lmtune.fileio import atomic_write_text
from lmtune.methods import apply_method, quantization_config
from lmtune.model import load_model, load_tokenizer
from lmtune.report import write_report
from lmtune.rundir import (
    MetricsLog,
    check_run_dir,
    check_same_data,
    environment,
    lock_run_dir,
    prepare_run_dir,
    write_json,
)
from lmtune.train.fastdropout import use_fast_dropout
from lmtune.train.launch import resolve_mixed_precision

# trl checkpoints (checkpoint-N, trl's own layout: model, optimizer, scheduler, RNG, trainer_state.json).
CHECKPOINTS = "checkpoints"

# trl's logged names -> ours in metrics.jsonl (the report plots `loss` per split; the others go to summary.json).
METRIC_NAMES = {
    "loss": "loss",
    "accuracy": "accuracy",  # reward: share of pairs scored chosen > rejected
    "margin": "margin",  # reward: mean score(chosen) - score(rejected)
    "mean_reward": "mean_score",
    "rewards/accuracies": "accuracy",  # dpo: share of pairs with implicit reward chosen > rejected
    "rewards/margins": "margin",  # dpo: mean beta * (log-ratio chosen - log-ratio rejected)
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "reward": "reward",  # rlhf: mean reward-model score of the sampled answers
    "reward_std": "reward_std",
    "kl": "kl",  # rlhf: mean per-token KL of the policy to the reference
    "completions/mean_length": "answer_tokens",
    "learning_rate": "lr",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
}


def metric_name(key: str) -> str | None:
    """Our name of one of trl's logged metrics; each reward function's mean (`rewards/NAME/mean`) is `reward/NAME`."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "rewards" and parts[2] == "mean":
        return f"reward/{parts[1]}"
    return METRIC_NAMES.get(key)


class MetricsCallback(TrainerCallback):
    """trl's logs -> metrics.jsonl rows ({split, step, loss, accuracy, ...}) and one line on the console each."""

    def __init__(self, metrics: MetricsLog, say: Callable[..., Any]) -> None:
        self.metrics, self.say = metrics, say

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "train_runtime" in logs:
            return
        split = "validation" if any(k.startswith("eval_") for k in logs) else "train"
        row: dict[str, Any] = {"split": split, "step": state.global_step}
        for key, value in logs.items():
            name = metric_name(key.removeprefix("eval_"))
            if name and isinstance(value, int | float):
                row[name] = float(value)
        if split == "validation" and len(row) <= 3:
            return  # an evaluation that measured nothing of ours (e.g. only runtimes)
        if state.is_world_process_zero:
            self.metrics.append(row)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("split", "step", "lr", "epoch"))
            self.say(f"step {row['step']} {split}: {shown}")


def start_run(cfg: RunConfig, *, resume: bool, overwrite: bool) -> Path:
    """Refuse to clobber a run (or to resume one with another config), then make the directory and seed."""
    run_dir = cfg.run_dir
    lock_run_dir(run_dir)  # one writer per run directory, for the life of this process's run
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if resume:
        check_same_config(run_dir, cfg)
    prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    set_seed(cfg.seed)
    return run_dir


def describe_run(run_dir: Path, cfg: RunConfig, splits: AlignSplits, *, resume: bool, chat: bool) -> None:
    """config.yaml, data.json and env.json; on resume, check the data are those the run started with."""
    if resume:
        check_same_data(run_dir, splits.info)
        return
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    data = {"format": "prompts", "chat": chat, "splits": splits.info, "leakage": {"checked": False}}
    write_json(run_dir, "data.json", data)
    write_json(run_dir, "env.json", environment())


def trl_args(config_class: type, cfg: RunConfig, run_dir: Path, *, evaluate: bool, **extra: Any) -> Any:
    """trl's config (a transformers TrainingArguments) from `train.*`, writing only inside the run directory."""
    t = cfg.train
    precision = resolve_mixed_precision(t.mixed_precision)
    periodic_eval = evaluate and t.eval_every is not None
    return config_class(
        output_dir=str(run_dir / CHECKPOINTS),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        adam_beta1=t.betas[0],
        adam_beta2=t.betas[1],
        max_grad_norm=t.max_grad_norm or 0.0,  # 0: no clipping
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        lr_scheduler_type="constant_with_warmup" if t.scheduler == "constant" else t.scheduler,
        # transformers 5 reads a float below 1 as a share of the total steps (it has no warmup_ratio any more).
        warmup_steps=t.warmup_steps if t.warmup_steps is not None else t.warmup_fraction,
        logging_steps=t.log_every,
        eval_strategy="steps" if periodic_eval else "no",
        eval_steps=t.eval_every if periodic_eval else None,
        save_strategy="steps" if t.save_every else "no",
        save_steps=t.save_every or 500,
        save_total_limit=t.keep_checkpoints,
        seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )


def quiet(trainer: Any, metrics: MetricsLog, say: Callable[..., Any]) -> Any:
    """transformers prints its logs on stdout (PrinterCallback); lmtune keeps stdout for --json: ours instead."""
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(MetricsCallback(metrics, say))
    return trainer


def resume_point(run_dir: Path, metrics: MetricsLog, resume: bool) -> str | None:
    """The trl checkpoint to resume from (None for a fresh run); forgets what was logged after it."""
    if not resume:
        return None
    folder = run_dir / CHECKPOINTS
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        raise LmtuneError(
            f"--resume: {run_dir} has no checkpoint yet",
            hint="set train.save_every to checkpoint during training, and start again with --overwrite",
        )
    metrics.truncate_after(int(Path(last).name.rsplit("-", 1)[1]))
    return last


def train(trainer: Any, checkpoint: str | None) -> float:
    """Run trl's training loop (from a checkpoint when resuming); returns the wall time in seconds."""
    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except KeyboardInterrupt:
        raise LmtuneError(
            "training interrupted", hint="continue from the last checkpoint with `lmtune train CONFIG --resume`"
        ) from None
    return time.perf_counter() - start


def base_summary(run_dir: Path, trainer: Any, elapsed: float, model: Any) -> dict[str, Any]:
    """What every alignment run reports: steps, time, parameters, first/last train loss, the diagnosis."""
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    train_rows = [r for r in records if r["split"] == "train" and "loss" in r]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {
        "steps": trainer.state.global_step,
        "epochs": round(train_rows[-1].get("epoch", 0.0), 3) if train_rows else 0,
        "train_time_s": round(elapsed, 3),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "first_train_loss": train_rows[0]["loss"] if train_rows else None,
        "last_train_loss": train_rows[-1]["loss"] if train_rows else None,
        "final_step": trainer.state.global_step,
        "diagnosis": [f.as_dict() for f in diagnose(records)],
        # The general-text loss (forgetting.*) is not measured for preference tasks yet.
        "forgetting_skipped": "not measured for preference tasks (reward, dpo, rlhf)",
    }


def before_after(run_dir: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """val_<key>_before (the step-0 evaluation) and val_<key>_after (the last) from metrics.jsonl."""
    val = [r for r in MetricsLog(run_dir / "metrics.jsonl").read() if r["split"] == "validation"]
    out: dict[str, Any] = {}
    for key in keys:
        rows = [r for r in val if key in r]
        if rows:
            out[f"val_{key}_before"] = rows[0][key] if rows[0]["step"] == 0 else None
            out[f"val_{key}_after"] = rows[-1][key]
            out[f"val_{key}_final"] = rows[-1][key]  # the final model is the last one (no early stopping here)
    losses = [r for r in val if "loss" in r]
    if "loss" in keys and losses:
        best = min(losses, key=lambda r: r["loss"])
        out.update(best_val_loss=best["loss"], best_val_step=best["step"])
    return out


def finish(
    run_dir: Path, model: Any, tokenizer: PreTrainedTokenizerBase, summary: dict[str, Any], say: Callable[..., Any]
) -> dict[str, Any]:
    """Save the tuned model (final/, atomically), write summary.json and the report."""
    save_final(run_dir, model, tokenizer)
    write_json(run_dir, "summary.json", summary)
    for finding in summary.get("diagnosis", []):
        say(f"{finding['kind']}: {finding['message']}.", warning=True)
    paths = write_report(run_dir)
    say(f"report: {paths.html} · model card: {paths.model_card}")
    return summary


def load_trainable(cfg: RunConfig, run_dir: Path, *, resume: bool, say: Callable[..., Any]) -> tuple[Any, Any]:
    """The tokenizer and the model to train, the method applied through `apply_method` (peft), as every task.

    Task rlhf trains the causal LM.
    """
    tokenizer = load_tokenizer(cfg.model)
    setup_chat_template(tokenizer, cfg.data.chat_template)
    model = load_model(cfg.model, quantization=quantization_config(cfg.method))
    if needs_base_copy(cfg) and not resume:
        save_base(run_dir, model)
    model = apply_method(model, cfg.method)
    if cfg.train.fast_dropout:
        use_fast_dropout(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    say(
        f"model {cfg.model.name} · task {cfg.task} · method {cfg.method.name}: {trainable:,} trainable of "
        f"{total:,} parameters ({100 * trainable / total:.2f}%)"
    )
    return model, tokenizer


def uses_chat_template(cfg: RunConfig, examples: list[Any]) -> bool:
    """Render through the chat template: data.template chat, or examples given as chat messages (auto)."""
    return pairs_use_chat(cfg.data.template, examples)
