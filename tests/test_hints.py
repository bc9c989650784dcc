"""Errors whose hint must name the fix (issue 14): custom model code and model.trust_remote_code, pickle-only
weights and how to convert them safely, a YAML tab with its column, CoNLL data in a .txt file, and a config that
names no model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from support import chat_record, run_main, write_jsonl

from lmtune.config import ModelConfig, load_config
from lmtune.data.load import load_records
from lmtune.errors import LmtuneError
from lmtune.model import load_model


def test_custom_code_names_trust_remote_code(gpt2_dir, tmp_path):
    custom = Path(shutil.copytree(gpt2_dir, tmp_path / "custom"))
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="lmtune-custom-arch", auto_map={"AutoModelForCausalLM": "modeling_custom.CustomLM"})
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmtuneError) as caught:
        load_model(ModelConfig(name=str(custom)))
    assert "ships its own Python code" in str(caught.value) and "model.trust_remote_code: true" in caught.value.hint


def test_pickle_only_weights_are_refused_with_a_safe_conversion_that_works(gpt2_dir, tmp_path):
    pickled = Path(shutil.copytree(gpt2_dir, tmp_path / "pickled"))
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(LmtuneError) as caught:
        load_model(ModelConfig(name=str(pickled)))
    assert "refuses on purpose" in str(caught.value) and "weights_only=True" in caught.value.hint
    # The hint's own command, run as given, makes the directory loadable.
    command = caught.value.hint.split('python -c "', 1)[1].rstrip('"').replace("'DIR'", repr(str(pickled)))
    subprocess.run([sys.executable, "-c", command], check=True)
    assert load_model(ModelConfig(name=str(pickled))) is not None


def test_a_yaml_tab_names_line_and_column(tmp_path):
    path = tmp_path / "tab.yaml"
    path.write_text("name: x\ndata:\n  train: a.jsonl\ntrain:\n  lr: 1e-4\n\tepochs: 2\n")
    with pytest.raises(LmtuneError, match=r"tab.yaml:6:1: not valid YAML") as caught:
        load_config(path)
    assert "replace the tab at line 6, column 1" in caught.value.hint


def test_conll_in_a_txt_file_is_read_and_plain_text_is_refused_with_a_hint(tmp_path):
    conll = tmp_path / "train.txt"
    conll.write_text("-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\nBlackburn NNP I-PER\n")
    records = load_records(str(conll))
    assert [r.data["tags"] for r in records] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    plain = tmp_path / "notes.txt"
    plain.write_text("Just some prose.\nMore prose.\n")
    with pytest.raises(LmtuneError, match=r"unsupported data file type '\.txt'") as caught:
        load_records(str(plain))
    assert "CoNLL" in caught.value.hint


def test_a_config_without_a_model_says_so_loudly(tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(24)])
    cfg = {"data": {"train": str(data), "val_fraction": 0.2, "max_length": 64}, "method": "full",
           "train": {"max_steps": 1, "batch_size": 4, "mixed_precision": "no"}, "forgetting": {"measure": False}}  # fmt: skip
    path = tmp_path / "nomodel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, _, err = run_main(monkeypatch, capsys, "train", path, "-o", tmp_path / "run")
    assert code == 0, err
    assert "warning: the config names no model" in err and "set model.name" in err
    path.write_text(yaml.safe_dump({**cfg, "model": {"name": "preset:tiny-chat"}}))
    code, _, err = run_main(monkeypatch, capsys, "train", path, "-o", tmp_path / "run2")
    assert code == 0 and "names no model" not in err
