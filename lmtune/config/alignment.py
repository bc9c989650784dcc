"""The `preference` and `rlhf` sections: the settings of the preference tasks (reward, dpo, rlhf)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from lmtune.config.base import Section as _Section


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


class RewardConfig(_Section):
    """One reward function of task rlhf (`rlhf.rewards`): a built-in check or a function of yours, weighted."""

    type: Literal["exact_match", "regex", "numeric_match", "length", "reward_model", "function"] = Field(
        ...,
        description="'exact_match': 1 when the answer (stripped) equals the record's `column`; 'regex': 1 when "
        "`pattern` matches (re.search; add ^...$ for the whole answer); 'numeric_match': 1 when the last number in "
        "the answer equals the number in `column` (within `tolerance`); 'length': 0 up to `max_tokens` answer "
        "tokens, then minus the excess over max_tokens (down to -1); 'reward_model': the score of the reward model "
        "at `path` (a `task: reward` run directory); 'function': your function at `path`, 'module:function', "
        "called as trl calls reward functions: f(prompts, completions, completion_ids, **columns) -> list of floats.",
    )
    weight: float = Field(1.0, description="The reward's weight in the total (trl's reward_weights).")
    name: str | None = Field(None, description="The name its curve and metrics carry (default: the type).")
    column: str = Field("answer", description="exact_match, numeric_match: the record's reference column.")
    pattern: str | None = Field(None, description="regex: the regular expression the answer must contain.")
    ignore_case: bool = Field(False, description="exact_match, regex: compare without case.")
    tolerance: float = Field(1e-6, ge=0.0, description="numeric_match: the largest difference still a match.")
    max_tokens: int = Field(64, gt=0, description="length: answer tokens allowed before the penalty starts.")
    path: str | None = Field(None, description="reward_model: run directory; function: 'module:function'.")

    @model_validator(mode="after")
    def _needs(self) -> RewardConfig:
        if self.type == "regex" and self.pattern is None:
            raise ValueError("rlhf.rewards: a regex reward needs a pattern")
        if self.type in ("reward_model", "function") and not self.path:
            what = "a reward model run directory" if self.type == "reward_model" else "'module:function'"
            raise ValueError(f"rlhf.rewards: a {self.type} reward needs path ({what})")
        if self.type == "function" and ":" not in str(self.path):
            raise ValueError(f"rlhf.rewards: function path {self.path!r} must read 'module:function'")
        return self

    @field_validator("path")
    @classmethod
    def _absolute_run_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("type") == "reward_model" and Path(value).expanduser().exists():
            return str(Path(value).expanduser().resolve())
        return value

    @property
    def label(self) -> str:
        return self.name or self.type


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
    rewards: list[RewardConfig] = Field(
        default_factory=list,
        description="Task rlhf: reward functions, each weighted (trl sums weight x reward): built-in checks against "
        "the prompt record's columns (exact_match, regex, numeric_match, length), a reward model, or your own "
        "function by import path. With rewards, reward_model is optional (it joins the list with weight 1). "
        "Each function's mean reward is logged (metrics.jsonl `reward/NAME`) and plotted in the report.",
    )
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
