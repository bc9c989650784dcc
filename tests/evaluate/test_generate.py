"""Generation from a tuned run (`lmtune.evaluate.generate`), on runs of the offline `preset:tiny-chat` model.

Each run trains a few steps on a few dozen examples written into tmp_path, so every test takes seconds.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from support import make_config, write_jsonl

from lmtune.api import finetune
from lmtune.data.formats import Message
from lmtune.errors import LmtuneError
from lmtune.evaluate.generate import generate
from lmtune.export import load_tuned

# --- generation ---------------------------------------------------------------------------------


def test_lora_on_a_preset_keeps_its_base_and_generates(tmp_path, chat_data):
    run = tmp_path / "run"
    summary = finetune(make_config(chat_data, method={"name": "lora", "r": 4}), output_dir=str(run)).summary
    assert summary["trainable_parameters"] < summary["total_parameters"] / 2
    assert (run / "base_model" / "config.json").is_file()
    assert (run / "base_model" / "model.safetensors").is_file()
    assert (run / "final" / "adapter_config.json").is_file()
    assert (run / "final" / "adapter_model.safetensors").is_file()
    ckpt = load_file(str(run / "checkpoints" / "step-000004" / "trainable.safetensors"))
    assert ckpt and all("lora_" in n for n in ckpt)  # a LoRA checkpoint is the adapter only

    text = generate(run, prompt="What is 3 plus 4?", max_new_tokens=8)
    assert isinstance(text, str)
    sampled = generate(run, prompt="What is 3 plus 4?", max_new_tokens=8, temperature=0.8, seed=1)
    assert isinstance(sampled, str)


def test_full_run_generates_from_a_prompt_and_from_messages(tmp_path, chat_data):
    run = tmp_path / "run"
    finetune(make_config(chat_data, train={"max_steps": 2}), output_dir=str(run))
    assert isinstance(generate(run, prompt="What is 3 plus 4?", max_new_tokens=8), str)
    msgs = [Message("system", "You are a concise assistant."), Message("user", "What is 1 plus 2?")]
    assert isinstance(generate(run, messages=msgs, max_new_tokens=8), str)
    with pytest.raises(LmtuneError, match="either a prompt or messages"):
        generate(run)


class _RecordingModel:
    """Wraps a model to record the input ids generate() passes it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.generation_config = model.generation_config
        self.inputs: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)  # config, device, eval/train: the wrapped model's

    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.inputs.append(input_ids[0].tolist())
        return self.model.generate(input_ids=input_ids, **kwargs)


def test_generation_renders_a_raw_prompt_with_the_runs_prompt_template(tmp_path):
    records = [{"prompt": f"{i} plus {i}", "completion": f"{2 * i}"} for i in range(30)]
    data = write_jsonl(tmp_path / "pc.jsonl", records)
    cfg = make_config(
        data, data={"template": "raw", "prompt_template": "Question: {prompt}\nAnswer: ", "val_fraction": 0.2}
    )
    run = tmp_path / "run"
    finetune(cfg, output_dir=str(run))
    assert json.loads((run / "data.json").read_text())["chat"] is False

    model, tokenizer, saved_cfg = load_tuned(run)
    spy = _RecordingModel(model)
    text = generate(run, prompt="5 plus 5", max_new_tokens=4, loaded=(spy, tokenizer, saved_cfg))
    assert isinstance(text, str)
    (ids,) = spy.inputs
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Question: 5 plus 5\nAnswer: "
    with pytest.raises(LmtuneError, match="raw text, not chat"):
        generate(run, messages=[Message("user", "hi")])
