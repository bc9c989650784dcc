"""`train.report_to`: what a run sends to TensorBoard, MLflow, W&B and Trackio, read back with each library's own reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import chat_record, run_cli, write_jsonl

from lmtune.api import finetune
from lmtune.config import load_config
from lmtune.errors import LmtuneError


def tracked_config(tmp_path: Path, trackers: list[str]) -> dict:
    """Three steps of the preset on chat records, validated at steps 0 and 3, sent to `trackers` as "tracked" in
    the group "study-x"."""
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(i) for i in range(12)])
    val = write_jsonl(tmp_path / "val.jsonl", [chat_record(i) for i in range(50, 54)])
    return {
        "name": "tracked",
        "data": {"train": str(train), "validation": str(val), "max_length": 64},
        "method": "full",
        "train": {"max_steps": 3, "batch_size": 4, "eval_every": 3, "mixed_precision": "no", "report_to": trackers,
                  "report_group": "study-x"},
        "forgetting": {"measure": False},
    }  # fmt: skip


def test_trackers_receive_the_runs_figures(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store the issue asks to read back
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tracked_config(tmp_path, ["tensorboard", "mlflow", "wandb"])
    run = finetune(cfg, output_dir=str(tmp_path / "run")).run_dir
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in logged if r["split"] == "train"]
    val_losses = [r["loss"] for r in logged if r["split"] == "validation"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard" / "tracked"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(train_losses, rel=1e-5)
    assert [e.step for e in events.Scalars("validation/loss")] == [0, 3]
    assert "train/grad_norm" in events.Tags()["scalars"] and "train/tokens_per_s" in events.Tags()["scalars"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient((tmp_path / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("study-x").experiment_id])
    assert found.info.run_name == "tracked" and found.data.params["train.lr"] == "0.0002"
    history = client.get_metric_history(found.info.run_id, "validation/loss")
    assert [m.value for m in history] == pytest.approx(val_losses, rel=1e-5)
    assert {"report.html", "summary.json", "config.yaml"} <= {a.path for a in client.list_artifacts(found.info.run_id)}

    (offline,) = (run / "wandb").glob("offline-run-*")  # W&B offline: its run files, ready for `wandb sync`
    assert (offline / "files" / "report.html").is_file() and (offline / "files" / "summary.json").is_file()
    records = next(offline.glob("run-*.wandb")).read_bytes()  # wandb 0.31 ships no reader for its record log
    assert b"train/loss" in records and b"validation/accuracy" not in records and b"study-x" in records


def test_unknown_tracker_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(LmtuneError, match=r"train\.report_to"):
        load_config({"data": {"train": "x.jsonl"}, "train": {"report_to": ["neptune"]}})


_READ_TRACKIO = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
project, run = sys.argv[1:]
print(json.dumps({"runs": SQLiteStorage.get_runs(project), "logs": SQLiteStorage.get_logs(project, run),
                  "config": SQLiteStorage.get_run_config(project, run)}))
"""


def test_trackio_receives_the_runs_figures_and_config(tmp_path: Path, monkeypatch) -> None:
    """Trackio keeps a project per report group in a local SQLite database under TRACKIO_DIR, which it reads when
    imported: the run and the reader are separate processes, so neither writes to the user's own store."""
    pytest.importorskip("trackio")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    config = tmp_path / "tracked.yaml"
    config.write_text(json.dumps(tracked_config(tmp_path, ["trackio"])), encoding="utf-8")  # JSON is YAML
    done = run_cli("train", config, "--output-dir", tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    read = subprocess.run([sys.executable, "-c", _READ_TRACKIO, "study-x", "tracked"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    stored = json.loads(read.stdout.strip().splitlines()[-1])
    assert stored["runs"] == ["tracked"]
    train_losses = [r["loss"] for r in logged if r["split"] == "train"]
    assert [r["train/loss"] for r in stored["logs"] if "train/loss" in r] == pytest.approx(train_losses, rel=1e-5)
    assert [r["step"] for r in stored["logs"] if "validation/loss" in r] == [0, 3]
    assert stored["config"]["name"] == "tracked" and stored["config"]["train.lr"] == pytest.approx(2e-4)
