"""`lmtune export`: the exported directory loads with plain transformers and is the run's model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support import run_cli, run_main
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GenerationConfig,
)

from lmtune.errors import LmtuneError
from lmtune.export import load_tuned
from lmtune.ship import export_model

ARCHS = {  # name -> (task, plain transformers class)
    "llama": ("sft", AutoModelForCausalLM),
    "gpt2": ("sft", AutoModelForCausalLM),
    "t5": ("seq2seq", AutoModelForSeq2SeqLM),
    "classifier": ("classification", AutoModelForSequenceClassification),
}


def _model_name(arch: str, request: pytest.FixtureRequest) -> str:
    return {"gpt2": str(request.getfixturevalue("gpt2_dir")), "t5": str(request.getfixturevalue("t5_dir"))}.get(
        arch, "preset:tiny-chat"
    )


def _logits(model: Any, tok: Any, task: str) -> torch.Tensor:
    enc = tok(["the cat is good", "What is 2 plus 3?"], return_tensors="pt", padding=True)
    extra = {"decoder_input_ids": torch.tensor([[0, 5, 6], [0, 7, 8]])} if task == "seq2seq" else {}
    with torch.no_grad():
        return model(**enc, **extra).logits.float()


@pytest.mark.parametrize("method", ["full", "lora", "dora"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_hf_export_loads_plainly_with_the_runs_logits(tmp_path, request, make_run, arch, method) -> None:
    task, auto = ARCHS[arch]
    run = make_run(task, method, _model_name(arch, request))
    result = export_model(run, tmp_path / "out")
    out = result.out
    assert not (out / "adapter_config.json").exists()  # merged: nothing for peft to do
    exported = auto.from_pretrained(out).eval()
    assert not hasattr(exported, "peft_config")
    tok = AutoTokenizer.from_pretrained(out)
    tuned, tuned_tok, _ = load_tuned(run)
    diff = (_logits(exported, tok, task) - _logits(tuned, tuned_tok, task)).abs().max().item()
    print(f"{arch}-{method}: max |logit diff| {diff:.2e}, {result.total_bytes / 1e6:.2f} MB")
    assert diff < 1e-4
    if task == "classification":
        assert exported.config.id2label == {0: "neg", 1: "pos"}
    if task == "sft":
        assert tok.chat_template and (out / "generation_config.json").exists()
        GenerationConfig.from_pretrained(out)
    assert "## Export" in (out / "README.md").read_text(encoding="utf-8")


def test_dtype_and_shards(tmp_path, make_run) -> None:
    run = make_run("sft", "lora")
    out = export_model(run, tmp_path / "bf16", dtype="bf16", max_shard_size="100KB").out
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((out / s).stat().st_size < 200_000 for s in shards)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16
    tuned, tok, _ = load_tuned(run)
    ref = _logits(tuned, tok, "sft")
    diff = (_logits(model, tok, "sft") - ref).abs().max().item()
    print(f"bf16 export: max |logit diff| {diff:.2e} (logits up to {ref.abs().max():.1f})")
    assert diff < 0.05 * max(1.0, ref.abs().max().item())


def test_ia3_merges(tmp_path, make_run) -> None:
    run = make_run("sft", "ia3", lr=5e-2)
    model = AutoModelForCausalLM.from_pretrained(export_model(run, tmp_path / "out").out)
    tuned, tok, _ = load_tuned(run)
    assert (_logits(model, tok, "sft") - _logits(tuned, tok, "sft")).abs().max() < 1e-4


@pytest.mark.parametrize("method", ["prompt_tuning", "adapters"])
def test_unmergeable_methods_are_refused_naming_the_adapter_format(tmp_path, make_run, method) -> None:
    run = make_run("sft", method)
    with pytest.raises(LmtuneError, match="--format adapter"):
        export_model(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_adapter_format_loads_with_peft(tmp_path, make_run) -> None:
    from peft import PeftModel

    run = make_run("sft", "lora")
    out = export_model(run, tmp_path / "adapter", format="adapter").out
    assert (out / "adapter_config.json").exists() and (out / "base_model").is_dir()
    base = AutoModelForCausalLM.from_pretrained(out / "base_model")
    model = PeftModel.from_pretrained(base, out).eval()
    tuned, tok, _ = load_tuned(run)
    assert (_logits(model, tok, "sft") - _logits(tuned, tok, "sft")).abs().max() < 1e-6


def test_cli_export_and_refusals(tmp_path: Path, make_run, monkeypatch, capsys) -> None:
    run = make_run("sft", "lora")
    done = run_cli("export", run, "--out", tmp_path / "cli", "--dtype", "fp16")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / "model.safetensors").exists() and "MB" in done.stdout
    code, _, err = run_main(monkeypatch, capsys, "export", run, "--out", tmp_path / "cli")
    assert code == 2 and "--overwrite" in err
    code, _, err = run_main(monkeypatch, capsys, "export", run, "--out", tmp_path / "x", "--dtype", "int3")
    assert code == 2 and "bf16" in err
