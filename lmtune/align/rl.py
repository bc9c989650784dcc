"""Task rlhf: online optimisation of the policy against a trained reward model, by trl's GRPO or RLOO trainer,
with a KL penalty (rlhf.beta) to the reference policy (the policy before training).

PPO is not offered: trl 1.16 ships no PPO trainer any more (GRPO and RLOO replace it; both need no value model).
The reward model scores `prompt + answer` as it was trained to (see `RewardScorer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
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
from lmtune.config import RlhfConfig, RunConfig
from lmtune.data.preferences import AlignSplits, to_trl
from lmtune.errors import LmtuneError
from lmtune.export import BASE_MODEL, load_tuned, read_run_config, save_base
from lmtune.rundir import MetricsLog
from lmtune.tokenizer import is_preset

ALGORITHMS = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}


class RewardScorer:
    """The reward model as a trl reward function: one score per (prompt, answer).

    Written here rather than handing trl the model: trl would score `prompt + answer` without the end-of-sequence
    token trl's RewardTrainer appended to every training text, so a tokenizer whose pad token is not its EOS
    would read the score at another position than in training. Chat prompts go through the reward tokenizer's
    chat template, as in reward training.
    """

    __name__ = "reward_model"  # trl names the reward in its logs by the function's name

    def __init__(self, model: Any, tokenizer: PreTrainedTokenizerBase, batch_size: int = 16) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def texts(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[str]:
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if isinstance(prompt, list):
                out.append(self.tokenizer.apply_chat_template(prompt + completion, tokenize=False))
            else:
                out.append(prompt + completion + (self.tokenizer.eos_token or ""))
        return out

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        texts = self.texts(prompts, completions)
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[i : i + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            scores.extend(self.model(**batch).logits[:, 0].float().tolist())
        return scores


def load_reward_model(path: str) -> tuple[Any, PreTrainedTokenizerBase]:
    """The reward model of a `task: reward` run directory (an adapter merged into its base), or a model directory
    holding a sequence classifier with one output. Frozen, in eval mode."""
    where = Path(path)
    if (where / "config.yaml").is_file():
        task = read_run_config(where).task
        if task != "reward":
            raise LmtuneError(
                f"rlhf.reward_model: {where} is a run of task {task}, not a reward model",
                hint="train one with `task: reward` and give its run directory",
            )
        model, tokenizer, _ = load_tuned(where)
        if is_peft_model(model):
            model = model.merge_and_unload()
    elif (where / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(where, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(where)
    else:
        raise LmtuneError(
            f"rlhf.reward_model: {path} is neither a run directory (config.yaml) nor a model directory (config.json)",
            hint="give the run directory of a `task: reward` run, e.g. runs/my-reward",
        )
    if getattr(model.config, "num_labels", None) != 1:
        raise LmtuneError(
            f"rlhf.reward_model: {path} has {model.config.num_labels} outputs; a reward model has one (the score)",
            hint="train it with `task: reward`",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), tokenizer


@torch.no_grad()
def mean_reward(
    policy: Any, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Any], scorer: RewardScorer, cfg: RunConfig
) -> dict[str, float]:
    """The reward model's mean score of the policy's answers to `prompts` (rlhf.eval_generations sampled per
    prompt at the training temperature, seeded so before and after see the same random draws)."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: list[str] = []
    expanded = [p for p in prompts for _ in range(cfg.rlhf.eval_generations)]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for i in range(0, len(expanded), 16):
                chunk = expanded[i : i + 16]
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
    completions = [
        [{"role": "assistant", "content": a}] if isinstance(p, list) else a
        for p, a in zip(expanded, answers, strict=True)
    ]
    scores = scorer(expanded, completions)
    return {"reward": sum(scores) / len(scores), "answers": float(len(scores))}


def train_rlhf(
    cfg: RunConfig, run_dir: Path, splits: AlignSplits, *, resume: bool, say: Callable[..., Any]
) -> dict[str, Any]:
    """Optimise the policy against the reward model; summary: mean reward on validation prompts before/after, KL."""
    reward_model, reward_tokenizer = load_reward_model(str(cfg.rlhf.reward_model))
    if torch.cuda.is_available():
        reward_model.to("cuda")  # where trl puts the policy: scoring there avoids a round trip per batch
    scorer = RewardScorer(reward_model, reward_tokenizer)
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
    val_prompts = [to_trl(p, chat)["prompt"] for p in splits.validation]
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
    )
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    checkpoint = resume_point(run_dir, metrics, resume)

    def measure(step: int) -> dict[str, float] | None:
        if not val_prompts:
            return None
        result = mean_reward(model, tokenizer, val_prompts, scorer, cfg)
        metrics.append({"split": "validation", "step": step, **result})
        say(f"step {step} validation: mean reward {result['reward']:.4f} over {int(result['answers'])} answers")
        return result

    before = measure(0) if checkpoint is None else None
    trainer = trainer_class(
        model=model,
        reward_funcs=scorer,
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
