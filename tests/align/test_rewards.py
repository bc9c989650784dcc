"""rlhf.rewards (lmtune/align/rewards.py): the built-in checks, user functions by import path, and a GRPO run that
logs and plots each function's reward."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import write_jsonl

from lmtune.align.rewards import ExactMatch, LengthPenalty, NumericMatch, Regex, build_rewards, last_number
from lmtune.config import RewardConfig, load_config
from lmtune.errors import LmtuneError


def spec(**kw: Any) -> RewardConfig:
    return RewardConfig(**kw)


def test_the_built_in_checks_score_each_answer():
    answers = [" 12", "It is 12.", "twelve", [{"role": "assistant", "content": "12"}]]
    refs = {"answer": ["12", "12", "12", "12.0"]}
    assert ExactMatch(spec(type="exact_match"))([], answers, **refs) == [1.0, 0.0, 0.0, 0.0]
    assert NumericMatch(spec(type="numeric_match"))([], answers, **refs) == [1.0, 1.0, 0.0, 1.0]
    assert Regex(spec(type="regex", pattern=r"^\s*\d+\s*$"))([], answers) == [1.0, 0.0, 0.0, 1.0]
    assert Regex(spec(type="regex", pattern="TWELVE", ignore_case=True))([], answers) == [0.0, 0.0, 1.0, 0.0]
    penalty = LengthPenalty(spec(type="length", max_tokens=4))
    assert penalty([], ["a"] * 3, completion_ids=[[1] * 3, [1] * 6, [1] * 40]) == [0.0, -0.5, -1.0]
    assert last_number("from 1,024 to -3.5") == -3.5 and last_number("none") is None


def test_a_missing_reference_column_is_named():
    with pytest.raises(LmtuneError, match=r"no column 'answer'.*columns: target"):
        ExactMatch(spec(type="exact_match"))(["p"], ["a"], target=["a"], trainer_state=None)


def test_reward_config_errors():
    with pytest.raises(ValueError, match="needs a pattern"):
        spec(type="regex")
    with pytest.raises(ValueError, match="'module:function'"):
        spec(type="function", path="mypkg.score")
    with pytest.raises(LmtuneError, match="share a name"):
        build_rewards([spec(type="regex", pattern="a"), spec(type="regex", pattern="b")], None)
    with pytest.raises(LmtuneError, match="cannot import module 'nowhere_pkg'"):
        build_rewards([spec(type="function", path="nowhere_pkg:score")], None)
    # rewards stand in for the reward model of task rlhf
    cfg = load_config({"task": "rlhf", "data": {"train": "p.jsonl"}, "rlhf": {"rewards": [{"type": "length"}]}})
    assert cfg.rlhf.reward_model is None and cfg.rlhf.rewards[0].label == "length"


def test_grpo_with_weighted_rewards_logs_and_plots_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from lmtune.api import finetune

    (tmp_path / "my_rewards.py").write_text(
        "def short(prompts, completions, completion_ids, **kw):\n"
        "    return [1.0 / (1 + len(ids)) for ids in completion_ids]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [{"prompt": f"{a} + {b} =", "answer": str(a + b)} for a in range(4) for b in range(4)]
    data = write_jsonl(tmp_path / "sums.jsonl", rows)
    rewards = [
        {"type": "numeric_match", "weight": 1.0},
        {"type": "regex", "name": "digits", "pattern": r"^\s*\d", "weight": 0.5},
        {"type": "length", "max_tokens": 4, "weight": 0.2},
        {"type": "function", "name": "short", "path": "my_rewards:short", "weight": 0.3},
    ]
    cfg = {
        "task": "rlhf",
        "method": "lora",
        "output_dir": str(tmp_path / "run"),
        "data": {"train": str(data), "val_fraction": 0.25},
        "forgetting": {"measure": False},
        "rlhf": {"rewards": rewards, "num_generations": 2, "max_new_tokens": 6, "eval_generations": 1},
        "train": {"lr": 1e-2, "max_steps": 2, "batch_size": 4, "mixed_precision": "no", "log_every": 1},
    }
    summary = finetune(cfg).summary
    assert summary["rewards"] == {"numeric_match": 1.0, "digits": 0.5, "length": 0.2, "short": 0.3}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    names = {"numeric_match", "digits", "length", "short"}
    train = [r for r in rows if r["split"] == "train"]
    assert train and all({f"reward/{n}" for n in names} <= set(r) for r in train)
    for r in [r for r in rows if r["split"] == "validation"]:
        weighted = sum(w * r[f"reward/{n}"] for n, w in summary["rewards"].items())
        assert r["reward"] == pytest.approx(weighted)
        assert 0 < r["reward/short"] <= 1 and -1 <= r["reward/length"] <= 0
    assert "Rewards per function" in (tmp_path / "run" / "report.html").read_text()
