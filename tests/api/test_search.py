"""`lmtune tune`: Optuna search over a config, pruning, refusals, resume after kill -9, workers sharing a storage."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, chat_record, run_main, write_jsonl

from lmtune.api.search import check_space, tune
from lmtune.config import load_config
from lmtune.errors import LmtuneError


def study_config(tmp_path: Path, space: dict[str, Any], **tune_: Any) -> dict[str, Any]:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(i) for i in range(16)])
    val = write_jsonl(tmp_path / "val.jsonl", [chat_record(i) for i in range(100, 108)])
    return {
        "name": "tiny",
        "data": {"train": str(train), "validation": str(val), "max_length": 64},
        "method": "full",
        "train": {"epochs": 1, "batch_size": 4, "lr": 3.0e-3, "eval_every": 1, "mixed_precision": "no"},
        "forgetting": {"measure": False},
        "tune": {"metric": "loss", "space": space, "startup_trials": 1, "warmup_evals": 0, **tune_},
    }


def test_space_paths_are_checked_like_set(tmp_path: Path) -> None:
    cfg = study_config(tmp_path, {"train.lrr": {"uniform": [0.1, 0.2]}})
    with pytest.raises(LmtuneError, match=r"tune.space.train.lrr = 0.1: .*unknown key; allowed here: .*batch_size"):
        tune(cfg, study_dir=tmp_path / "s")
    cfg = study_config(tmp_path, {"train.batch_size": {"choice": [4, 0]}})
    with pytest.raises(LmtuneError, match=r"train.batch_size = 0: .*must be > 0"):
        tune(cfg, study_dir=tmp_path / "s")
    # method.r exists for lora, not for full: fine when the space also searches method.name, refused otherwise
    both = study_config(tmp_path, {"method.name": {"choice": ["full", "lora"]}, "method.r": {"choice": [4, 8]}})
    check_space(both, (), load_config(both).tune)
    alone = study_config(tmp_path, {"method.r": {"choice": [4, 8]}})
    with pytest.raises(LmtuneError, match=r"method\.r = 4"):
        check_space(alone, (), load_config(alone).tune)
    with pytest.raises(LmtuneError, match="exactly one of"):
        load_config(study_config(tmp_path, {"train.lr": {"uniform": [0.1, 0.2], "choice": [1]}}))
    with pytest.raises(LmtuneError, match=r"no tune\.space"):
        tune({k: v for k, v in cfg.items() if k != "tune"}, study_dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_study_prunes_bad_trials_and_writes_its_outputs(tmp_path: Path) -> None:
    # The config's own lr trains; the searched ones barely move the loss and fall behind at their first evaluation.
    cfg = study_config(tmp_path, {"train.lr": {"log_uniform": [1.0e-7, 2.0e-7]}}, n_trials=3, sampler="random")
    result = tune(cfg, study_dir=tmp_path / "study")
    states = [t["state"] for t in result.trials]
    assert states == ["complete", "pruned", "pruned"]
    assert result.start is result.trials[0] and result.start["params"] == {"train.lr": 3.0e-3}
    assert result.best is not None and result.best["number"] == 0 and result.trials[0]["steps"] == 4
    assert [t["steps"] for t in result.trials[1:]] == [1, 1]
    assert "behind the other trials" in result.trials[1]["reason"]
    rows = list(csv.DictReader((tmp_path / "study" / "trials.csv").open()))
    assert [r["state"] for r in rows] == states and float(rows[2]["train.lr"]) < 2.0e-7
    best = load_config(tmp_path / "study" / "best.yaml")  # ready for `lmtune train`
    assert best.name == "tiny-best" and best.train.lr == 3.0e-3 and best.tune is None and best.output_dir is None
    page = (tmp_path / "study" / "study.html").read_text()
    assert "Optimisation history" in page and "data:image/png" in page and "<script" not in page
    for t in result.trials:  # every trial is an ordinary run directory
        run = Path(t["run_dir"])
        assert (run / "config.yaml").is_file() and (run / "report.html").is_file()
        assert json.loads((run / "trial.json").read_text())["state"] == t["state"]
        assert not (run / "checkpoints").exists()
    with pytest.raises(LmtuneError, match="already holds a study"):
        tune(cfg, study_dir=tmp_path / "study")
    again = tune(cfg, study_dir=tmp_path / "study", resume=True)  # all 3 trials there: the outputs only
    assert len(again.trials) == 3


def test_bad_combinations_fail_and_oversized_trials_are_not_started(tmp_path: Path) -> None:
    space = {"method.name": {"choice": ["lora", "prompt_tuning"]}, "data.packing": {"choice": [False, True]}}
    cfg = study_config(tmp_path, space, n_trials=4, sampler="grid", pruner="none")
    cfg["method"], cfg["train"]["max_steps"] = "lora", 1
    result = tune(cfg, study_dir=tmp_path / "grid")
    failed = [t for t in result.trials if t["state"] == "fail"]
    assert len(result.trials) == 4 and len(failed) == 1
    assert failed[0]["params"] == {"method.name": "prompt_tuning", "data.packing": True}
    assert "data.packing" in failed[0]["reason"]
    small = study_config(tmp_path, {"train.lr": {"uniform": [1.0e-3, 2.0e-3]}}, n_trials=1, memory_limit_mb=0.01)
    refused = tune(small, study_dir=tmp_path / "small").trials[0]
    assert refused["state"] == "pruned" and refused["reason"].startswith("not started: lmtune estimate puts")
    assert not (tmp_path / "small" / "best.yaml").exists()


def test_cli_tune_json(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(study_config(tmp_path, {"train.lr": {"uniform": [1.0e-3, 2.0e-3]}})))
    code, out, _ = run_main(monkeypatch, capsys, "tune", path, "--trials", "1", "-o", tmp_path / "s", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["best"]["number"] == 0 and data["trials"][0]["state"] == "complete"
    assert set(data["files"]) == {"best.yaml", "trials.csv", "study.html"}
    code, _, err = run_main(monkeypatch, capsys, "tune", path, "-o", tmp_path / "s", "--set", "tune.sampler=nope")
    assert code == 2 and "tune.sampler" in err


def _worker(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lmtune.cli", "tune", str(config), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_kill_reruns_the_trial_that_died(tmp_path: Path) -> None:
    cfg = study_config(tmp_path, {"train.lr": {"uniform": [1.0e-3, 2.0e-3]}}, n_trials=2, pruner="none")
    cfg["train"].update(max_steps=40, eval_every=None)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    worker = _worker(path, "-o", str(tmp_path / "s"))
    second = tmp_path / "s" / "trials" / "trial-001" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (second.is_file() and second.stat().st_size) and worker.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)  # in the middle of the second trial
    worker.wait()
    result = tune(path, study_dir=tmp_path / "s", resume=True)
    states = [t["state"] for t in result.trials]
    assert states == ["complete", "fail", "complete"], worker.stdout.read() if worker.stdout else ""
    assert "stopped" in result.trials[1]["reason"] and result.trials[2]["params"] == result.trials[1]["params"]
    assert json.loads((second.parent / "trial.json").read_text())["state"] == "failed"


def test_two_workers_share_one_storage(tmp_path: Path) -> None:
    cfg = study_config(tmp_path, {"train.lr": {"uniform": [1.0e-3, 2.0e-3]}}, n_trials=4, pruner="none")
    cfg["train"]["max_steps"] = 2
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    other = _worker(path, "--storage", url, "-o", str(tmp_path / "s"))  # a second process, as on another machine
    deadline = time.time() + 120
    while not (tmp_path / "s" / "trials").is_dir() and other.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # joined once it has started its first trial
    mine = tune(path, storage=url, study_dir=tmp_path / "s")
    assert other.wait(timeout=300) == 0, other.stdout.read() if other.stdout else ""
    import optuna

    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert len(trials) in (4, 5)  # each worker stops once it sees 4 (the other's running one may be a 5th)
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert sum(1 for t in trials if t.user_attrs.get("start")) == 1
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)
    assert mine.storage == url
