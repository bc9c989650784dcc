"""The reward functions of task rlhf (`rlhf.rewards`), in the form trl's GRPO and RLOO trainers call them:
`f(prompts, completions, completion_ids, **columns) -> list[float]`, one reward per sampled answer, where `columns`
are the prompt records' other fields (the reference answer a check compares with). trl weighs them
(`reward_weights`), sums them and logs each function's mean as `rewards/NAME/mean`, which `lmtune.align.common`
records as `reward/NAME`.

The checks are small classes rather than closures so that trl names each by the config's name (`__name__`) and
so that they pickle (trl may send reward functions to worker processes).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import is_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from lmtune.config import RewardConfig
from lmtune.errors import LmtuneError
from lmtune.export import load_tuned, read_run_config

RewardFn = Callable[..., list[float]]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


def answer_text(completion: Any) -> str:
    """The text of one sampled answer: a string, or (chat prompts) the assistant messages trl hands over."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def last_number(text: str) -> float | None:
    """The last number written in `text` (thousands commas allowed: '1,024' is 1024), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


class _Check:
    """A built-in check: holds its settings, named as the config names it."""

    def __init__(self, spec: RewardConfig) -> None:
        self.spec, self.__name__ = spec, spec.label

    def references(self, columns: dict[str, Any], n: int) -> list[Any]:
        column = self.spec.column
        if column not in columns:
            shown = ", ".join(k for k in columns if k not in ("trainer_state", "log_extra", "log_metric")) or "none"
            raise LmtuneError(
                f"rlhf.rewards {self.__name__}: the prompt records have no column {column!r} (columns: {shown})",
                hint="set the reward's column to the field holding the reference answer",
            )
        values = list(columns[column])
        assert len(values) == n, "trl passes one reference per sampled answer"
        return values


class ExactMatch(_Check):
    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        refs = self.references(columns, len(completions))
        fold = str.lower if self.spec.ignore_case else str
        return [
            float(fold(answer_text(c).strip()) == fold(str(r).strip())) for c, r in zip(completions, refs, strict=True)
        ]


class Regex(_Check):
    def __init__(self, spec: RewardConfig) -> None:
        super().__init__(spec)
        try:
            self.pattern = re.compile(str(spec.pattern), re.IGNORECASE if spec.ignore_case else 0)
        except re.error as e:
            raise LmtuneError(f"rlhf.rewards {self.__name__}: bad regular expression {spec.pattern!r}: {e}") from None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        return [float(self.pattern.search(answer_text(c)) is not None) for c in completions]


class NumericMatch(_Check):
    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        out = []
        for c, r in zip(completions, self.references(columns, len(completions)), strict=True):
            got, want = last_number(answer_text(c)), last_number(str(r))
            out.append(
                float(got is not None and want is not None and math.isclose(got, want, abs_tol=self.spec.tolerance))
            )
        return out


class LengthPenalty(_Check):
    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **_: Any
    ) -> list[float]:
        most = self.spec.max_tokens
        return [-min(1.0, max(0, len(ids) - most) / most) for ids in completion_ids]


class RewardScorer:
    """A trained reward model as a trl reward function: one score per (prompt, answer).

    Written here rather than handing trl the model: trl would score `prompt + answer` without the end-of-sequence
    token trl's RewardTrainer appended to every training text, so a tokenizer whose pad token is not its EOS
    would read the score at another position than in training. Chat prompts go through the reward tokenizer's
    chat template, as in reward training.
    """

    def __init__(
        self, model: Any, tokenizer: PreTrainedTokenizerBase, batch_size: int = 16, name: str = "reward_model"
    ) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.__name__ = name  # trl names the reward in its logs by the function's name

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


def reward_model_scorer(path: str, name: str = "reward_model") -> RewardScorer:
    model, tokenizer = load_reward_model(path)
    if torch.cuda.is_available():
        model.to("cuda")  # where trl puts the policy: scoring there avoids a round trip per batch
    return RewardScorer(model, tokenizer, name=name)


def import_function(path: str, name: str) -> RewardFn:
    """Your reward function by import path, 'package.module:function' (the module importable from where lmtune
    runs, e.g. on PYTHONPATH or installed)."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LmtuneError(
            f"rlhf.rewards {name}: cannot import module {module_name!r} ({e})",
            hint="make the module importable (install it, or add its folder to PYTHONPATH)",
        ) from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise LmtuneError(f"rlhf.rewards {name}: {module_name} has no function {attr!r}")
    return func


_CHECKS: dict[str, type[_Check]] = {
    "exact_match": ExactMatch,
    "regex": Regex,
    "numeric_match": NumericMatch,
    "length": LengthPenalty,
}


def build_rewards(specs: Sequence[RewardConfig], reward_model: str | None) -> tuple[list[RewardFn], list[float]]:
    """The reward functions of rlhf.rewards (rlhf.reward_model first, with weight 1, when set) and their weights."""
    funcs: list[RewardFn] = []
    weights: list[float] = []
    if reward_model is not None:
        funcs.append(reward_model_scorer(reward_model))
        weights.append(1.0)
    names = [s.label for s in specs] + (["reward_model"] if reward_model else [])
    if len(set(names)) != len(names):
        raise LmtuneError(f"rlhf.rewards: two rewards share a name ({', '.join(names)}); give each its own name")
    for spec in specs:
        if spec.type == "reward_model":
            funcs.append(reward_model_scorer(str(spec.path), spec.label))
        elif spec.type == "function":
            func = import_function(str(spec.path), spec.label)
            funcs.append(_Named(func, spec.label))
        else:
            funcs.append(_CHECKS[spec.type](spec))
        weights.append(spec.weight)
    return funcs, weights


class _Named:
    """A user function under the config's name (trl logs each reward by its callable's name)."""

    def __init__(self, func: RewardFn, name: str) -> None:
        self.func, self.__name__ = func, name

    def __call__(self, *args: Any, **kwargs: Any) -> list[float]:
        return list(self.func(*args, **kwargs))
