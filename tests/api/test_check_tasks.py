"""`lmtune data check` understands every task (issue 14): it reads the task from the config (or --task) and checks
records the way that task trains them, including every config shipped in configs/."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import REPO, run_main, write_jsonl

from lmtune.api import check_data
from lmtune.config import load_config

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def offline_model(name: str, t5_dir: Path) -> str | None:
    """A stand-in for a hub model these tests cannot download (same kind, so the same task applies)."""
    if name.startswith(("preset:", "pypi:")) or (REPO / name).exists():
        return None
    return str(t5_dir) if "t5" in name.lower() else "preset:tiny-chat"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_data_check_reads_every_shipped_config(config, t5_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name their data relative to the repository
    cfg = load_config(config)
    paths = [src.path for src in cfg.data.sources()] + [cfg.data.validation]  # a mixture: each source
    missing = [s for s in paths if s and s.startswith("../") and not (REPO / s).exists()]
    if missing:  # ../shared/data sits beside the checkout in this workplace and CI, not in every clone
        pytest.skip(f"{', '.join(missing)} is not beside this checkout")
    stand_in = offline_model(cfg.model.name, t5_dir)
    report = check_data(config, overrides=[f"model.name={stand_in}"] if stand_in else [], near=None)
    assert report.errors == [], [f.message for f in report.errors]
    suffixes = [f" · {src.label}" for src in cfg.data.sources()] if cfg.data.mixture else [""]
    for suffix in suffixes:
        assert report.splits["train" + suffix].examples > 0 and report.splits["train" + suffix].lengths
        assert "validation" + suffix in report.splits


def pairs_file(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "Hi", "chosen": "Hello! How can I help?", "rejected": "Go away."},
            {"prompt": "Hi", "chosen": "", "rejected": "x"},
            {"prompt": "Q", "chosen": "same", "rejected": "same"},
            {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
            {"chosen": "no prompt here", "rejected": ["not", "messages"]},
        ],
    )


@pytest.mark.parametrize("task", ["dpo", "reward"])
def test_preference_pairs_report_each_bad_line(tmp_path, task, monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "data", "check", pairs_file(tmp_path), "--task", task)
    assert code == 2 and "Traceback" not in err
    err += out
    assert "pairs.jsonl:2: field 'chosen'" in err
    assert "pairs.jsonl:3: the chosen and rejected answers are identical" in err
    assert "pairs.jsonl:5:" in err
    assert "cannot tell the format" not in err


def test_rlhf_prompts_are_checked(tmp_path):
    data = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"prompt": "Tell me a story."}, {"messages": [{"role": "user", "content": "Hi"}]}, {"prompt": 3}],
    )
    # (a run needs the reward model to train against; its data can be checked before there is one)
    report = check_data(data, overrides=["task=rlhf", "rlhf.reward_model=runs/reward"], near=None)
    assert report.splits["train"].examples == 2
    assert [(f.line, f.severity) for f in report.errors] == [(3, "error")]


def test_classification_file_with_task_classification(tmp_path):
    data = tmp_path / "sentiment.tsv"
    data.write_text("sentence\tlabel\ngreat film\t1\nawful plot\t0\nfine acting\t1\nboring\t0\n", encoding="utf-8")
    report = check_data(data, overrides=["task=classification", "data.columns.text=sentence"], near=None)
    assert report.errors == [] and report.splits["train"].labels == {"1": 2, "0": 2}
    assert report.splits["train"].lengths
