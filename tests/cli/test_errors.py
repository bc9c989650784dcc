"""Bad input to the `lmtune` command: exit code 2, no traceback, and a message that says where. The cases call
`lmtune.cli.main` (the console script's entry point) in-process with the same arguments, which keeps them fast;
one of them also runs in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import assert_clean_error, chat_record, run_main, write_config, write_jsonl
from support import run_cli as lmtune_cli

# --- bad input: exit code 2, no traceback, the message says where ---------------------------------


@pytest.fixture
def bad_inputs(tmp_path: Path) -> Path:
    good = [json.dumps(chat_record(i)) for i in range(6)]
    broken = [*good[:2], '{"messages": [{"role": "user", "content": "hi"}', *good[2:]]
    (tmp_path / "broken.jsonl").write_text("\n".join(broken) + "\n", encoding="utf-8")
    bad_role = chat_record(1)
    bad_role["messages"][2]["role"] = "robot"
    write_jsonl(tmp_path / "role.jsonl", [chat_record(0), bad_role, *map(chat_record, range(2, 6))])
    return tmp_path


@pytest.mark.parametrize(
    ("data_file", "needles"),
    [
        ("broken.jsonl", ["broken.jsonl:3", "invalid JSON"]),
        ("role.jsonl", ["role.jsonl:2", "messages[2].role", "robot"]),
        ("missing.jsonl", ["data file not found", "missing.jsonl"]),
    ],
)
def test_bad_data_is_reported_by_file_line_and_field(bad_inputs, monkeypatch, capsys, data_file, needles):
    monkeypatch.chdir(bad_inputs)
    cfg = write_config(bad_inputs / "cfg.yaml", bad_inputs / data_file)
    code, _, err = run_main(monkeypatch, capsys, "train", cfg, "-o", bad_inputs / "run")
    assert code == 2
    assert_clean_error(err, *needles)
    assert not any((bad_inputs / "run").glob("*"))  # nothing written: fixing the data and rerunning just works


def test_bad_data_through_the_real_command(bad_inputs):
    cfg = write_config(bad_inputs / "cfg.yaml", bad_inputs / "role.jsonl")
    proc = lmtune_cli("data", "preview", cfg, cwd=bad_inputs)
    assert proc.returncode == 2
    assert_clean_error(proc.stderr, "role.jsonl:2", "messages[2].role")


def test_an_unknown_config_key_names_the_file_and_the_key(bad_inputs, monkeypatch, capsys):
    cfg = write_config(bad_inputs / "cfg.yaml", bad_inputs / "role.jsonl", optimizer={"lr": 1})
    code, _, err = run_main(monkeypatch, capsys, "config", "show", cfg)
    assert code == 2
    assert_clean_error(err, "cfg.yaml", "optimizer", "unknown key")

    cfg.write_text(cfg.read_text().replace("batch_size: 4", "batch_sise: 4"), encoding="utf-8")
    code, _, err = run_main(monkeypatch, capsys, "train", cfg, "-o", bad_inputs / "run")
    assert code == 2
    assert_clean_error(err, "cfg.yaml", "train.batch_sise", "unknown key", "batch_size")


def test_invalid_yaml_names_the_line(bad_inputs, monkeypatch, capsys):
    cfg = bad_inputs / "cfg.yaml"
    cfg.write_text("data:\n  train: x.jsonl\ntrain: [1,\n", encoding="utf-8")
    code, _, err = run_main(monkeypatch, capsys, "config", "show", cfg)
    assert code == 2
    assert_clean_error(err, "cfg.yaml:", "not valid YAML")


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("train.lr", ["--set", "train.lr", "KEY=VALUE"]),
        ("train.lr=-1", ["train.lr", "must be > 0"]),
        ("train.lr=fast", ["train.lr", "fast"]),
        ("train.nope=1", ["train.nope", "unknown key"]),
        ("method.name=magic", ["method", "magic"]),
    ],
)
def test_an_invalid_set_is_reported(workspace, monkeypatch, capsys, override, needles):
    code, _, err = run_main(monkeypatch, capsys, "config", "show", workspace / "cfg.yaml", "--set", override)
    assert code == 2
    assert_clean_error(err, *needles)


def test_a_missing_config_file(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "train", tmp_path / "nope.yaml", "-o", tmp_path / "run")
    assert code == 2
    assert_clean_error(err, "config file not found", "nope.yaml")
