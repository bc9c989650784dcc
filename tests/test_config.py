from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
import yaml

from lmtune.config import (
    FreezeMethod,
    FullMethod,
    LoraMethod,
    RunConfig,
    TrainConfig,
    dump_config,
    load_config,
    parse_override,
)
from lmtune.errors import LmtuneError

REPO = Path(__file__).resolve().parents[1]
# configs/accelerate/ holds accelerate launch configs (tested in tests/test_distributed.py), not run configs.
SHIPPED_CONFIGS = sorted(
    p for p in [*REPO.glob("configs/**/*.yaml"), *REPO.glob("configs/**/*.yml")] if "accelerate" not in p.parts
)
MINIMAL = {"data": {"train": "train.jsonl"}}


def error_of(source, overrides=()) -> str:
    with pytest.raises(LmtuneError) as info:
        load_config(source, overrides)
    return str(info.value)


def test_defaults():
    cfg = load_config(MINIMAL)
    assert cfg.name == "run"
    assert cfg.task == "sft"
    assert cfg.seed == 42
    assert cfg.model.name == "preset:tiny-chat"
    assert cfg.model.dtype == "float32"
    assert cfg.data.train == "train.jsonl"
    assert cfg.data.max_length == 512
    assert cfg.data.template == "auto"
    assert cfg.data.packing is False
    assert cfg.method == LoraMethod(name="lora", r=16, alpha=32, dropout=0.05, target_modules="all-linear")
    assert cfg.train == TrainConfig()
    assert cfg.train.lr == 2e-4
    assert cfg.train.betas == (0.9, 0.999)
    assert cfg.train.max_grad_norm == 1.0
    assert cfg.run_dir == Path("runs") / "run"
    assert load_config(MINIMAL, output_dir="elsewhere").run_dir == Path("elsewhere")


def test_yaml_file_name_is_the_default_run_name(tmp_path):
    path = tmp_path / "my-exp.yaml"
    path.write_text("data:\n  train: t.jsonl\n", encoding="utf-8")
    assert load_config(path).name == "my-exp"
    path.write_text("name: given\ndata:\n  train: t.jsonl\n", encoding="utf-8")
    assert load_config(path).name == "given"


@pytest.mark.parametrize("tag, section", [("lora", LoraMethod), ("full", FullMethod), ("freeze", FreezeMethod)])
def test_method_shorthand_expands_to_the_section_with_defaults(tag, section):
    cfg = load_config({**MINIMAL, "method": tag})
    assert type(cfg.method) is section
    assert cfg.method == section()
    assert cfg == load_config({**MINIMAL, "method": {"name": tag}})


def test_method_section_without_a_name_is_the_default_lora():
    assert load_config({**MINIMAL, "method": {"r": 8}}).method == LoraMethod(r=8)
    # --set on a config that has no method section at all
    assert load_config(MINIMAL, ["method.r=4"]).method == LoraMethod(r=4)


def test_set_overrides_are_parsed_as_yaml_values():
    cfg = load_config(
        MINIMAL,
        [
            "train.lr=1e-4",
            "train.max_grad_norm=null",
            "data.packing=true",
            "data.max_length=64",
            "model.name=some/model",
            "train.betas=[0.8, 0.9]",
            "seed=7",
        ],
    )
    assert isinstance(cfg.train.lr, float)
    assert cfg.train.lr == 1e-4
    assert cfg.train.max_grad_norm is None
    assert cfg.data.packing is True
    assert cfg.data.max_length == 64
    assert cfg.model.name == "some/model"
    assert cfg.train.betas == (0.8, 0.9)
    assert cfg.seed == 7


@pytest.mark.parametrize(
    "item, expected",
    [
        ("train.lr=1e-4", (["train", "lr"], 1e-4)),
        ("train.lr=1.5E-3", (["train", "lr"], 1.5e-3)),
        ("train.lr=2e+2", (["train", "lr"], 200.0)),
        ("train.epochs=3", (["train", "epochs"], 3)),
        ("data.chat_template=a=b", (["data", "chat_template"], "a=b")),
        ("name=", (["name"], "")),
    ],
)
def test_parse_override(item, expected):
    keys, value = parse_override(item)
    assert (keys, value) == expected
    assert type(value) is type(expected[1])


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(LmtuneError, match="expected KEY=VALUE"):
        parse_override("train.lr")


def test_set_method_replaces_the_method_and_reaches_into_a_shorthand():
    base = {**MINIMAL, "method": "lora"}
    assert load_config(base, ["method=full"]).method == FullMethod()
    assert load_config(base, ["method.r=8"]).method == LoraMethod(r=8)
    assert load_config(base, ["method=freeze", "method.train_last_layers=1"]).method == FreezeMethod(
        train_last_layers=1
    )


def test_override_does_not_mutate_the_source_dict():
    raw = {"data": {"train": "a.jsonl"}, "train": {"lr": 0.1}}
    load_config(raw, ["train.lr=0.2", "data.train=b.jsonl"])
    assert raw == {"data": {"train": "a.jsonl"}, "train": {"lr": 0.1}}


def test_error_names_key_path_and_bound():
    msg = error_of({**MINIMAL, "train": {"lr": -1}})
    assert "train.lr: must be > 0, got -1" in msg
    assert "train.lr: must be > 0, got 0" in error_of(MINIMAL, ["train.lr=0"])
    assert "method.r: must be > 0, got 0" in error_of({**MINIMAL, "method": {"name": "lora", "r": 0}})
    assert "data.val_fraction: must be < 1, got 1" in error_of({"data": {"train": "t", "val_fraction": 1}})


def test_error_for_a_bad_literal_lists_the_choices():
    msg = error_of({"data": {"train": "t", "template": "fancy"}})
    assert "data.template:" in msg
    for choice in ("'auto'", "'chat'", "'raw'", "'fancy'"):
        assert choice in msg


def test_unknown_key_lists_the_allowed_keys():
    msg = error_of({**MINIMAL, "train": {"lrr": 1}})
    line = next(x for x in msg.splitlines() if "train.lrr" in x)
    assert "unknown key" in line
    allowed = line.split("allowed here:")[1]
    assert [k.strip() for k in allowed.split(",")] == sorted(TrainConfig.model_fields)

    top = error_of({**MINIMAL, "trian": {}})
    assert "trian: unknown key; allowed here: " + ", ".join(sorted(RunConfig.model_fields)) in top


def test_unknown_key_in_a_method_lists_that_methods_keys():
    msg = error_of({**MINIMAL, "method": {"name": "freeze", "r": 8}})
    assert "method.r: unknown key; allowed here: name, train_last_layers, train_modules" in msg
    msg = error_of({**MINIMAL, "method": {"name": "lora", "layers": 2}})
    assert "method.layers: unknown key; allowed here: " + ", ".join(sorted(LoraMethod.model_fields)) in msg


def test_unknown_method_tag_lists_the_methods():
    known = "adapters, dora, freeze, full, ia3, lora, prefix_tuning, prompt_tuning, qlora"
    msg = error_of({**MINIMAL, "method": "lokr"})
    assert f"method: must be one of {known}, got 'lokr'" in msg
    assert f"method: must be one of {known}, got 'vera'" in error_of(MINIMAL, ["method=vera"])
    # a new method's own keys are listed for its unknown keys
    msg = error_of({**MINIMAL, "method": {"name": "prompt_tuning", "r": 4}})
    assert "method.r: unknown key; allowed here: init_text, name, num_virtual_tokens" in msg


def test_missing_data_section_is_named():
    msg = error_of({})
    assert "data: is required" in msg
    assert "data.train: is required" in error_of({"data": {}})


def test_bad_run_name_is_explained():
    assert "name: use letters, digits" in error_of({**MINIMAL, "name": "a b"})


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata:\n  train: t.jsonl\n   max_length: 8\ntrain: {}\n", encoding="utf-8")
    with pytest.raises(LmtuneError) as info:
        load_config(path)
    # The badly indented key is on line 4; its column follows.
    assert re.match(rf"{re.escape(str(path))}:4:\d+: not valid YAML: ", str(info.value)), str(info.value)


def test_yaml_that_is_not_a_mapping_and_missing_files(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(LmtuneError, match="top level must be a mapping"):
        load_config(path)
    with pytest.raises(LmtuneError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_is_frozen():
    cfg = load_config(MINIMAL)
    with pytest.raises(pydantic.ValidationError):
        cfg.train.lr = 1.0
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 1
    with pytest.raises(pydantic.ValidationError):
        cfg.method.r = 2
    assert cfg.train.lr == 2e-4 and cfg.seed == 42 and cfg.method.r == 16


def test_dump_then_load_round_trips(tmp_path):
    cfg = load_config(
        {
            "name": "rt",
            "seed": 3,
            "output_dir": "out/rt",
            "model": {"name": "org/model", "dtype": "bfloat16", "gradient_checkpointing": True},
            "data": {
                "train": "t.jsonl",
                "validation": "v.jsonl",
                "columns": {"prompt": "q", "completion": "a"},
                "prompt_template": "Q: {q}\nA: ",
                "packing": True,
                "max_length": 128,
            },
            "method": {"name": "freeze", "train_last_layers": 1, "train_modules": ["lm_head.*"]},
            "train": {"lr": 1e-3, "betas": [0.8, 0.95], "max_grad_norm": None, "scheduler": "linear"},
        }
    )
    text = dump_config(cfg)
    assert load_config(yaml.safe_load(text)) == cfg
    path = tmp_path / "saved.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path) == cfg
    assert load_config(cfg) == cfg
    assert load_config(cfg, ["train.lr=0.5"]).train.lr == 0.5


def test_shipped_configs_were_found():
    assert SHIPPED_CONFIGS, "no YAML under configs/"


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[str(p.relative_to(REPO)) for p in SHIPPED_CONFIGS])
def test_every_shipped_config_parses(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert load_config(yaml.safe_load(dump_config(cfg))) == cfg
