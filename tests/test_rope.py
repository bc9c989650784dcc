"""model.rope_scaling: longer context than the base was trained on, through transformers' own RoPE scaling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import REPO, run_main, write_jsonl
from transformers import AutoConfig, LlamaConfig

from lmtune.api import estimate
from lmtune.config import ModelConfig, load_config
from lmtune.errors import LmtuneError
from lmtune.model import load_model
from lmtune.rope import apply_rope_scaling, context_length

STORIES = REPO.parent / "shared" / "models" / "stories260K"  # a real tiny Llama trained to 512 positions
needs_stories = pytest.mark.skipif(
    not STORIES.is_dir(), reason="../shared/models/stories260K is not beside the checkout"
)


def scaled(kind: str, factor: float = 4.0, **extra: object) -> ModelConfig:
    return ModelConfig(name="preset:tiny-chat", rope_scaling={"type": kind, "factor": factor, **extra})


@pytest.mark.parametrize(
    ("kind", "positions", "context", "first_inv_freq"),
    [("linear", 2048, 2048, 0.25), ("yarn", 2048, 2048, 1.0), ("dynamic", 512, 2048, 1.0)],
)
def test_scaling_reaches_the_model_config_and_its_rotary_embedding(kind, positions, context, first_inv_freq):
    model = load_model(scaled(kind))  # the preset: a Llama trained (configured) to 512 positions
    params = model.config.rope_parameters
    assert (params["rope_type"], params["factor"]) == (kind, 4.0)
    assert model.config.max_position_embeddings == positions and context_length(model.config) == context
    assert model.model.rotary_emb.rope_type == kind
    assert model.model.rotary_emb.inv_freq[0].item() == pytest.approx(first_inv_freq)  # linear: positions / 4
    if kind == "yarn":
        assert params["original_max_position_embeddings"] == 512


def test_bad_settings_and_models_are_refused_in_words(gpt2_dir):
    with pytest.raises(LmtuneError, match="factor"):
        load_config({"data": {"train": "x.jsonl"}, "model": {"rope_scaling": {"type": "linear", "factor": 1.0}}})
    with pytest.raises(LmtuneError, match="rope_scaling"):
        load_config({"data": {"train": "x.jsonl"}, "model": {"rope_scaling": {"type": "ntk", "factor": 2}}})
    with pytest.raises(LmtuneError, match=r"\(gpt2\) has no RoPE to scale"):
        load_model(ModelConfig(name=str(gpt2_dir), rope_scaling={"type": "linear", "factor": 2}))
    llama31 = LlamaConfig(rope_parameters={"rope_type": "linear", "factor": 8.0, "rope_theta": 5e5})
    with pytest.raises(LmtuneError, match="scales its RoPE already"):
        apply_rope_scaling(llama31, scaled("linear"))


def long_stories(tmp_path: Path, n: int = 2) -> Path:
    """Stories long enough for 2048 stories260K tokens each (4x its 512 trained positions)."""
    story = "Once upon a time there was a little cat named {i}. She liked to play in the sun with her friends. "
    return write_jsonl(tmp_path / "long.jsonl", [{"text": story.format(i=i) * 100} for i in range(n)])


def run_config(tmp_path: Path, rope: dict | None) -> dict:
    return {
        "model": {"name": str(STORIES), **({"rope_scaling": rope} if rope else {})},
        "data": {"train": str(long_stories(tmp_path)), "val_fraction": 0, "max_length": 2048, "template": "raw"},
        "method": "full",
        "train": {"max_steps": 2, "batch_size": 1, "mixed_precision": "no"},
        "forgetting": {"measure": False},
    }


@needs_stories
def test_estimate_counts_rows_at_four_times_the_trained_length(tmp_path):
    plain = estimate(run_config(tmp_path, None))
    longer = estimate(run_config(tmp_path, {"type": "linear", "factor": 4}))
    assert plain.peak_batch == longer.peak_batch == (1, 2048)  # the 2048-token rows, not capped at 512
    assert any("past the model's 512 positions; set model.rope_scaling" in n for n in plain.notes)
    assert any(
        "4.0x the base's 512 positions; rope_scaling linear x4 stretches them to 2048" in n for n in longer.notes
    )


@needs_stories
def test_tiny_llama_trains_at_four_times_its_positions_and_saves_the_scaling(tmp_path, monkeypatch, capsys):
    config = tmp_path / "long.yaml"
    config.write_text(json.dumps(run_config(tmp_path, {"type": "linear", "factor": 4})))
    code, out, err = run_main(monkeypatch, capsys, "train", config, "--output-dir", tmp_path / "run")
    assert code == 0, out + err
    tokens = json.loads((tmp_path / "run" / "data.json").read_text())["splits"]["train"]["tokens"]
    assert tokens["max_length_seen"] > 2048 and tokens["tokens"] == 2 * 2048  # rows cut at 4 x 512
    saved = AutoConfig.from_pretrained(tmp_path / "run" / "final")
    assert saved.rope_parameters["rope_type"] == "linear" and saved.rope_parameters["factor"] == 4.0
    assert saved.max_position_embeddings == 2048
