"""Task rlhf: online optimisation of the policy against a trained reward model, by trl's GRPO or RLOO trainer,
with a KL penalty (rlhf.beta) to the reference policy (the policy before training).

PPO is not offered: trl 1.16 ships no PPO trainer any more (GRPO and RLOO replace it; both need no value model).
The rewards are a trained reward model (which scores `prompt + answer` as it was trained to) and the functions of
rlhf.rewards, weighted (`lmtune.align.rewards`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from lmtune.align.common import (
    base_summary,
    describe_run,
    finish,
    load_trainable,
    quiet,
    resume_point,
    train,
    trl_args,
    uses_chat_template,
)
from lmtune.align.rewards import RewardFn, build_rewards
from lmtune.config import RlhfConfig, RunConfig
from lmtune.data.preferences import AlignSplits, to_trl
from lmtune.export import BASE_MODEL, save_base
from lmtune.rundir import MetricsLog
from lmtune.tokenizer import is_preset

ALGORITHMS = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}


@torch.no_grad()
def mean_reward(
    policy: Any,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, Any]],
    rewards: tuple[list[RewardFn], list[float]],
    cfg: RunConfig,
) -> dict[str, float]:
    """The weighted reward of the policy's answers to the prompts of `rows` (trl dataset rows: prompt and the
    record's columns), and each function's mean as `reward/NAME`; rlhf.eval_generations answers sampled per
    prompt at the training temperature, seeded so before and after see the same random draws."""
    expanded = [row for row in rows for _ in range(cfg.rlhf.eval_generations)]
    prompts = [row["prompt"] for row in expanded]
    answers = _sample(policy, tokenizer, prompts, cfg)
    completions = [
        [{"role": "assistant", "content": a}] if isinstance(p, list) else a
        for p, a in zip(prompts, answers, strict=True)
    ]
    ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
    columns = {k: [row[k] for row in expanded] for k in expanded[0] if k != "prompt"}
    total = [0.0] * len(expanded)
    out: dict[str, float] = {}
    for func, weight in zip(*rewards, strict=True):
        scores = func(prompts=prompts, completions=completions, completion_ids=ids, **columns)
        scored = [x for x in scores if x is not None]  # None: the function does not apply (as trl reads it)
        out[f"reward/{func.__name__}"] = sum(scored) / len(scored) if scored else float("nan")
        total = [t + weight * (x or 0.0) for t, x in zip(total, scores, strict=True)]
    return {"reward": sum(total) / len(total), "answers": float(len(total)), **out}


def _sample(policy: Any, tokenizer: PreTrainedTokenizerBase, prompts: list[Any], cfg: RunConfig) -> list[str]:
    """One sampled answer per prompt, decoded (seeded; the policy's training mode and padding side restored)."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: list[str] = []
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for i in range(0, len(prompts), 16):
                chunk = prompts[i : i + 16]
                texts = [
                    tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                    if isinstance(p, list)
                    else p
                    for p in chunk
                ]
                batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
                out = policy.generate(
                    **batch,
                    do_sample=True,
                    temperature=cfg.rlhf.temperature,
                    top_k=0,
                    max_new_tokens=cfg.rlhf.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
                answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        policy.train(was_training)
    return answers


def train_rlhf(
    cfg: RunConfig, run_dir: Path, splits: AlignSplits, *, resume: bool, say: Callable[..., Any]
) -> dict[str, Any]:
    """Optimise the policy against the reward model; summary: mean reward on validation prompts before/after, KL."""
    rewards = build_rewards(cfg.rlhf.rewards, cfg.rlhf.reward_model)
    model, tokenizer = load_trainable(cfg, run_dir, resume=resume, say=say)
    r = cfg.rlhf
    if r.beta > 0 and not is_peft_model(model) and is_preset(cfg.model.name):
        # trl rebuilds the reference of a full policy from the model's path; a preset has no weights there.
        if not resume:
            save_base(run_dir, model)
        model.config._name_or_path = str(run_dir / BASE_MODEL)
    chat = uses_chat_template(cfg, splits.train)
    describe_run(run_dir, cfg, splits, resume=resume, chat=chat)
    train_ds = Dataset.from_list([to_trl(p, chat) for p in splits.train])
    val_rows = [to_trl(p, chat) for p in splits.validation]
    config_class, trainer_class = ALGORITHMS[r.algorithm]
    args = trl_args(
        config_class,
        cfg,
        run_dir,
        evaluate=False,
        num_generations=r.num_generations,
        max_completion_length=r.max_new_tokens,
        temperature=r.temperature,
        beta=r.beta,
        reward_weights=rewards[1],
    )
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    checkpoint = resume_point(run_dir, metrics, resume)

    def measure(step: int) -> dict[str, float] | None:
        if not val_rows:
            return None
        result = mean_reward(model, tokenizer, val_rows, rewards, cfg)
        metrics.append({"split": "validation", "step": step, **result})
        say(f"step {step} validation: mean reward {result['reward']:.4f} over {int(result['answers'])} answers")
        return result

    before = measure(0) if checkpoint is None else None
    trainer = trainer_class(
        model=model,
        reward_funcs=rewards[0],
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
    )
    quiet(trainer, metrics, say)
    elapsed = train(trainer, checkpoint)
    after = measure(trainer.state.global_step)
    summary = base_summary(run_dir, trainer, elapsed, model)
    # GRPO/RLOO's loss is a policy-gradient surrogate near 0 by construction: its curve says nothing of fit.
    summary["diagnosis"] = []
    summary.update(_reward_summary(metrics, r, before, after, reference=_reference(r, model)))
    if after is not None:
        b = summary["val_reward_before"]
        say(
            f"rlhf ({r.algorithm}): validation mean reward {'?' if b is None else f'{b:.4f}'} -> "
            f"{after['reward']:.4f}; KL to the reference at the end {summary['kl_last'] or 0:.4f}"
        )
    return finish(run_dir, trainer.model, tokenizer, summary, say)


def _reward_summary(
    metrics: MetricsLog,
    r: RlhfConfig,
    before: dict[str, float] | None,
    after: dict[str, float] | None,
    reference: str,
) -> dict[str, Any]:
    """The summary's RL figures: validation reward before/after, the training reward's first/last, the KL."""
    rows = [row for row in metrics.read() if row["split"] == "train"]
    kls = [row["kl"] for row in rows if "kl" in row]
    rewards = [row["reward"] for row in rows if "reward" in row]
    return dict(
        algorithm=r.algorithm,
        beta=r.beta,
        reward_model=r.reward_model,
        rewards={spec.label: spec.weight for spec in r.rewards},
        val_reward_before=before["reward"] if before else _first_val_reward(metrics),
        val_reward_after=after["reward"] if after else None,
        train_reward_first=rewards[0] if rewards else None,
        train_reward_last=rewards[-1] if rewards else None,
        kl_last=kls[-1] if kls else None,
        kl_max=max(kls) if kls else None,
        reference=reference,
    )


def _reference(r: RlhfConfig, model: Any) -> str:
    """What the KL penalty compares the policy with."""
    if r.beta == 0:
        return "none (rlhf.beta 0)"
    return "adapter disabled (implicit)" if is_peft_model(model) else "the base weights, reloaded by trl"


def _first_val_reward(metrics: MetricsLog) -> float | None:
    rows = [r for r in metrics.read() if r["split"] == "validation" and r["step"] == 0 and "reward" in r]
    return rows[0]["reward"] if rows else None
