"""End-to-end tests of `lmtune.api.finetune` (lmtune/api/train.py) on the offline `preset:tiny-chat` model.

Each run trains a few steps on a few dozen examples written into tmp_path, so every test takes seconds.
"""

from __future__ import annotations

import json
import re
from importlib import metadata

import pytest
import torch
import yaml
from safetensors.torch import load_file
from support import chat_record, crash_at, final_weights, make_config, read_metrics, train_losses, write_jsonl

from lmtune.api import finetune
from lmtune.config import ModelConfig, load_config
from lmtune.errors import LmtuneError
from lmtune.model import load_model

# --- the run directory --------------------------------------------------------------------------


def test_finetune_writes_a_self_describing_run_directory(tmp_path, chat_data):
    run = tmp_path / "run"
    result = finetune(make_config(chat_data), output_dir=str(run))
    assert result.run_dir == run

    # config.yaml: the resolved config, which loads back to the same RunConfig.
    saved = load_config(run / "config.yaml")
    assert saved == load_config(make_config(chat_data), output_dir=str(run))
    assert saved.train.max_steps == 4 and saved.method.name == "full"

    # data.json: file hash, content fingerprint and counts per split.
    data = json.loads((run / "data.json").read_text())
    assert data["format"] == "messages" and data["chat"] is True
    train, val = data["splits"]["train"], data["splits"]["validation"]
    assert re.fullmatch(r"[0-9a-f]{64}", train["file_sha256"])
    assert re.fullmatch(r"[0-9a-f]{64}", train["fingerprint"])
    assert re.fullmatch(r"[0-9a-f]{64}", val["fingerprint"])
    assert train["fingerprint"] != val["fingerprint"]
    assert train["records"] == 40
    assert (train["examples"], val["examples"]) == (32, 8)
    assert train["tokens"]["kept"] == 32 and train["tokens"]["trained_tokens"] > 0
    assert val["tokens"]["kept"] == 8

    # env.json: the library versions the run used.
    env = json.loads((run / "env.json").read_text())
    assert env["libraries"]["torch"] == metadata.version("torch")
    for lib in ("lmtune", "transformers", "peft", "accelerate"):
        assert env["libraries"][lib], lib
    assert env["python"]
    assert env["launch"] == {"distributed_type": "NO", "processes": 1, "mixed_precision": "no"}

    # metrics.jsonl: one train record per step, validation before the first step and after the last.
    records = read_metrics(run)
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    for r in train_records:
        assert r["loss"] > 0 and r["lr"] > 0 and r["tokens_per_s"] > 0
    assert [r["step"] for r in records if r["split"] == "validation"] == [0, 4]

    # checkpoints and the final model with its tokenizer.
    for step in (2, 4):
        ckpt = run / "checkpoints" / f"step-{step:06d}"
        for name in ("trainable.safetensors", "training_state.pt", "loop_state.json"):
            assert (ckpt / name).is_file(), ckpt / name
        assert json.loads((ckpt / "loop_state.json").read_text())["step"] == step
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (run / "final" / name).is_file(), name
    assert not (run / "base_model").exists()  # full fine-tuning needs no copy of the base

    # summary.json, and the loss fell.
    summary = json.loads((run / "summary.json").read_text())
    assert summary == result.summary
    assert summary["steps"] == 4
    assert summary["trained_tokens"] == train_records[-1]["tokens"] > 0
    assert summary["train_time_s"] > 0
    assert summary["first_train_loss"] == train_records[0]["loss"]
    assert summary["last_train_loss"] == train_records[-1]["loss"]
    assert summary["last_train_loss"] < summary["first_train_loss"]
    assert summary["val_loss_after"] < summary["val_loss_before"]
    assert summary["best_val_loss"] == min(summary["val_loss_before"], summary["val_loss_after"])


def test_a_run_directory_is_never_overwritten_silently(tmp_path, chat_data):
    run = tmp_path / "run"
    cfg = make_config(chat_data, train={"max_steps": 1})
    finetune(cfg, output_dir=str(run))
    first = (run / "summary.json").read_text()
    with pytest.raises(LmtuneError, match=r"already exists") as info:
        finetune(cfg, output_dir=str(run))
    assert "--resume" in str(info.value) and "--overwrite" in str(info.value)
    assert (run / "summary.json").read_text() == first

    (run / "stale.txt").write_text("from an older run")
    finetune(cfg, output_dir=str(run), overwrite=True)
    assert not (run / "stale.txt").exists()
    assert (run / "summary.json").is_file()


def test_overwrite_only_ever_deletes_a_run_directory(tmp_path, chat_data, monkeypatch):
    cfg = make_config(chat_data, train={"max_steps": 1})
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep me")
    with pytest.raises(LmtuneError, match="not an lmtune run directory"):
        finetune(cfg, output_dir=str(project), overwrite=True)
    monkeypatch.chdir(project)
    with pytest.raises(LmtuneError, match="current directory"):
        finetune(cfg, output_dir=".", overwrite=True)
    with pytest.raises(LmtuneError, match="current directory"):
        finetune(cfg, output_dir=str(tmp_path), overwrite=True)
    assert (project / "notes.txt").read_text() == "keep me"


def test_a_dict_config_with_overrides(tmp_path, chat_data):
    run = tmp_path / "run"
    result = finetune(make_config(chat_data), overrides=["train.max_steps=2", "train.lr=1e-3"], output_dir=str(run))
    assert result.summary["steps"] == 2
    assert load_config(run / "config.yaml").train.lr == 1e-3


def test_a_yaml_config_file(tmp_path, chat_data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(make_config(chat_data, train={"max_steps": 2})), encoding="utf-8")
    result = finetune(path, output_dir=str(tmp_path / "run"))
    assert result.summary["steps"] == 2


# --- resume == uninterrupted --------------------------------------------------------------------


@pytest.mark.parametrize("method", [{"name": "full"}, {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.1}])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, chat_data, method):
    cfg = make_config(chat_data, method=method)

    straight = tmp_path / "straight"
    finetune(cfg, output_dir=str(straight))

    # The loop runs after_step hooks before it checkpoints, so a crash in the hook at step 3 comes after the
    # step-2 checkpoint was written and before step 3's (or step 4's) was: the run has to go back to step 2.
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, output_dir=str(crashed), after_step=[crash_at(3)])
    assert [p.name for p in sorted((crashed / "checkpoints").iterdir())] == ["step-000002"]
    assert not (crashed / "final").exists() and not (crashed / "summary.json").exists()
    assert max(train_losses(crashed)) == 3  # step 3 was logged before the crash, and is logged again on resume

    result = finetune(cfg, output_dir=str(crashed), resume=True)
    assert result.summary["steps"] == 4

    a, b = train_losses(straight), train_losses(crashed)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-6), step
    assert [r["step"] for r in read_metrics(crashed) if r["split"] == "validation"] == [0, 4]

    wa, wb = final_weights(straight), final_weights(crashed)
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=0, msg=name)
    assert result.summary["trained_tokens"] == json.loads((straight / "summary.json").read_text())["trained_tokens"]
    assert result.summary["val_loss_after"] == pytest.approx(
        json.loads((straight / "summary.json").read_text())["val_loss_after"], rel=1e-6
    )


def test_resume_with_l2sp_and_replay_equals_an_uninterrupted_run(tmp_path, chat_data):
    """L2-SP's anchors are the weights before training, taken again on resume before the checkpoint loads."""
    cfg = make_config(chat_data, data={"replay": {"source": "stories", "fraction": 0.2}}, train={"l2sp": 0.05})
    straight = tmp_path / "straight"
    expected = finetune(cfg, output_dir=str(straight)).summary
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, output_dir=str(crashed), after_step=[crash_at(3)])
    summary = finetune(cfg, output_dir=str(crashed), resume=True).summary

    a, b = train_losses(straight), train_losses(crashed)
    assert sorted(b) == [1, 2, 3, 4] and all(b[s] == pytest.approx(a[s], rel=1e-6) for s in a)
    penalties = [r["l2sp"] for r in read_metrics(crashed) if r["split"] == "train"]
    assert penalties[0] == 0 < penalties[1] < penalties[-1]  # w starts at w0 and moves away from it
    wa, wb = final_weights(straight), final_weights(crashed)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=0, msg=name)
    assert summary["forgetting"]["ratio"] == pytest.approx(expected["forgetting"]["ratio"], rel=1e-6)
    assert summary["forgetting"]["before"] == expected["forgetting"]["before"]  # measured on the base again


def test_resume_with_a_changed_config_is_refused(tmp_path, chat_data):
    run = tmp_path / "run"
    cfg = make_config(chat_data)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, output_dir=str(run), after_step=[crash_at(3)])
    with pytest.raises(LmtuneError, match=r"config differs.*train"):
        finetune(cfg, overrides=["train.lr=1e-4"], output_dir=str(run), resume=True)
    # The refused resume touched nothing: the unchanged config still resumes.
    assert finetune(cfg, output_dir=str(run), resume=True).summary["steps"] == 4


def test_resume_with_changed_data_is_refused(tmp_path, chat_data):
    run = tmp_path / "run"
    cfg = make_config(chat_data)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, output_dir=str(run), after_step=[crash_at(3)])
    original = chat_data.read_text(encoding="utf-8")
    write_jsonl(chat_data, [chat_record(i + 100) for i in range(40)])  # same file, same size, other examples
    with pytest.raises(LmtuneError, match="data differ"):
        finetune(cfg, output_dir=str(run), resume=True)
    chat_data.write_text(original, encoding="utf-8")
    assert finetune(cfg, output_dir=str(run), resume=True).summary["steps"] == 4


def test_a_validation_file_of_another_shape_is_refused(tmp_path, chat_data):
    val = write_jsonl(tmp_path / "val.jsonl", [{"prompt": "What is 1 plus 2?", "completion": "3"}])
    cfg = make_config(chat_data, data={"validation": str(val)})
    with pytest.raises(LmtuneError, match=r"val\.jsonl holds prompt_completion records.*holds messages"):
        finetune(cfg, output_dir=str(tmp_path / "run"))


def test_leaked_validation_examples_warn_or_refuse(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(i) for i in range(12)])
    leaked = chat_record(3)
    leaked["messages"][1]["content"] = leaked["messages"][1]["content"].upper() + "  "  # same after normalising
    same_question = chat_record(5)
    same_question["messages"][2]["content"] = "A different answer."
    val = write_jsonl(tmp_path / "val.jsonl", [leaked, chat_record(30), same_question])
    cfg = make_config(train, data={"validation": str(val)}, train={"max_steps": 1})
    with pytest.raises(
        LmtuneError,
        match=r"2 validation examples also appear in train \(.*val\.jsonl:1 = .*train\.jsonl:4 \(exact\); .*val\.jsonl:3 = .*train\.jsonl:6 \(input-exact\)",
    ):
        finetune({**cfg, "data": {**cfg["data"], "leakage": "error"}}, output_dir=str(tmp_path / "run"))
    # The refused run left nothing behind that blocks a new one; 'warn' trains and records what it found.
    result = finetune(cfg, output_dir=str(tmp_path / "run"))
    leakage = json.loads((result.run_dir / "data.json").read_text())["leakage"]
    assert leakage == {"checked": True, "leaked_examples": 2, "kinds": {"input-exact": 1, "exact": 1}}


def test_resume_without_a_checkpoint_is_refused(tmp_path, chat_data):
    with pytest.raises(LmtuneError, match="no run at"):
        finetune(make_config(chat_data), output_dir=str(tmp_path / "nothing"), resume=True)

    run = tmp_path / "run"
    cfg = make_config(chat_data, train={"save_every": None})
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, output_dir=str(run), after_step=[crash_at(1)])
    assert not (run / "checkpoints").exists()
    with pytest.raises(LmtuneError, match="no checkpoint"):
        finetune(cfg, output_dir=str(run), resume=True)


# --- packing and methods ------------------------------------------------------------------------


def test_packing_trains_and_reports_validation_loss(tmp_path, chat_data):
    run = tmp_path / "run"
    cfg = make_config(chat_data, data={"packing": True, "max_length": 128})
    summary = finetune(cfg, output_dir=str(run)).summary
    data = json.loads((run / "data.json").read_text())
    assert data["splits"]["train"]["rows"] < data["splits"]["train"]["examples"]  # examples share rows
    assert summary["val_loss_before"] is not None
    assert summary["val_loss_after"] < summary["val_loss_before"]
    assert summary["last_train_loss"] < summary["first_train_loss"]


def test_freeze_trains_only_the_last_blocks(tmp_path, chat_data):
    run = tmp_path / "run"
    cfg = make_config(chat_data, method={"name": "freeze", "train_last_layers": 1})
    summary = finetune(cfg, output_dir=str(run)).summary
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    assert summary["val_loss_after"] < summary["val_loss_before"]

    base = {n: p.detach() for n, p in load_model(ModelConfig()).named_parameters()}
    tuned = final_weights(run)
    frozen = [n for n in base if not n.startswith("model.layers.1.")]
    trained = [n for n in base if n.startswith("model.layers.1.") and n.endswith(".weight") and "norm" not in n]
    assert frozen and trained
    for name in frozen:
        torch.testing.assert_close(tuned[name], base[name], rtol=0, atol=0, msg=name)
    assert all(not torch.equal(tuned[name], base[name]) for name in trained)
    ckpt = load_file(str(run / "checkpoints" / "step-000004" / "trainable.safetensors"))
    assert all(n.startswith("model.layers.1.") for n in ckpt)  # checkpoints hold the trainable weights only
