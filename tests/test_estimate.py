"""The pre-flight estimate (`lmtune estimate`): exact parameter counts, the memory formulas against what autograd
saves and what a probe measures, the time forecast against a real run, and the command."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from support import REPO, run_main, save_model_dir, write_jsonl
from transformers import LlamaConfig, LlamaForCausalLM

from lmtune import estimate as est
from lmtune.api import estimate, finetune
from lmtune.config import FreezeMethod, FullMethod, LoraMethod, ModelConfig, TrainConfig, load_config
from lmtune.data.batching import unpacked
from lmtune.data.types import Tokenized
from lmtune.estimate import measure
from lmtune.estimate import memory as memory_terms
from lmtune.methods import apply_method, transformer_blocks
from lmtune.model import count_parameters, load_model, load_tokenizer
from lmtune.train.loop import Hooks, make_optimizer, train_loop
from lmtune.train.objectives import causal_lm_loss
from lmtune.train.state import LoopState

PRESET = "preset:tiny-chat"
QUIET = Console(stderr=True, quiet=True)
WORDS = [
    "the",
    "a",
    "lamp",
    "keeper",
    "boat",
    "sea",
    "night",
    "light",
    "storm",
    "harbor",
    "rope",
    "wave",
    "calm",
    "bright",
    "dark",
    "old",
    "young",
    "tall",
]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~2M-parameter Llama (GQA, 4 layers, 192 wide) saved with the preset's tokenizer: memory in the 100 MB
    range, so the measured peaks are far above noise."""
    tok = load_tokenizer(ModelConfig(name=PRESET))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    return save_model_dir(LlamaForCausalLM, config, tmp_path_factory.mktemp("llama2m"))


@pytest.fixture(scope="module")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Texts of 60 to 170 tokens, so batches are padded to different widths."""
    rng = random.Random(0)
    records = [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 60)))} for _ in range(96)]
    return write_jsonl(tmp_path_factory.mktemp("estimate-data") / "text.jsonl", records)


def run_config(model: str | Path, data: Path, method: Any, precision: str, **train: Any) -> dict[str, Any]:
    return {
        "name": "estimate-test",
        "model": {"name": str(model)},
        "data": {"train": str(data), "format": "text", "max_length": 256, "val_fraction": 0},
        "method": method,
        "train": {"batch_size": 8, "mixed_precision": precision, "save_every": 10_000, **train},
    }


def spec_of(model: torch.nn.Module, gradient_checkpointing: bool = False) -> est.ModelSpec:
    return est.describe_model(model, transformer_blocks(model), gradient_checkpointing)


# --- parameter counts: exact ---------------------------------------------------------------------


def test_lora_on_a_512_square_layer_at_rank_8_adds_8192_parameters():
    assert est.lora_parameters(512, 512, 8) == 8 * (512 + 512) == 8_192
    config = LlamaConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=1, num_attention_heads=8)
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = LlamaForCausalLM(config)
    peft_model = apply_method(model, LoraMethod(r=8, target_modules=["q_proj"]))
    assert count_parameters(peft_model)[0] == 8_192
    assert spec_of(peft_model).lora_params == 8_192


def analytic_lora(base: torch.nn.Module, r: int, targets: list[str] | str) -> int:
    """r·(in + out) summed over the linear layers the target names select (all-linear: all but the head)."""
    total = 0
    for name, module in base.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if (targets == "all-linear" and leaf != "lm_head") or leaf in targets:
            total += est.lora_parameters(module.in_features, module.out_features, r)
    return total


@pytest.mark.parametrize(
    ("r", "targets"),
    [(4, "all-linear"), (8, ["q_proj", "v_proj"]), (16, ["gate_proj", "down_proj"]), (2, ["o_proj"])],
)
def test_lora_counts_equal_the_real_peft_model(r, targets):
    method = LoraMethod(r=r, target_modules=targets)
    expected = analytic_lora(load_model(ModelConfig(name=PRESET)), r, targets)
    real = apply_method(load_model(ModelConfig(name=PRESET)), method)
    meta = apply_method(est.meta_model(ModelConfig(name=PRESET)), method)
    trainable, total = count_parameters(real)
    assert trainable == expected == spec_of(meta).lora_params == spec_of(meta).trainable_params
    assert total == spec_of(meta).total_params


@pytest.mark.parametrize(
    "method",
    [FullMethod(), FreezeMethod(train_last_layers=1), FreezeMethod(train_last_layers=0, train_modules=["lm_head.*"])],
)
def test_full_and_freeze_counts_equal_the_real_model(method):
    real = apply_method(load_model(ModelConfig(name=PRESET)), method)
    spec = spec_of(apply_method(est.meta_model(ModelConfig(name=PRESET)), method))
    assert (spec.trainable_params, spec.total_params) == count_parameters(real)
    assert spec.gradient_bytes == 4 * spec.trainable_params  # fp32 weights: one fp32 gradient each


def test_tied_embeddings_are_counted_once(gpt2_dir):
    real = load_model(ModelConfig(name=str(gpt2_dir)))
    spec = spec_of(est.meta_model(ModelConfig(name=str(gpt2_dir))))
    assert spec.total_params == count_parameters(real)[1] == sum(p.numel() for p in set(real.parameters()))
    assert not spec.llama_like  # GPT-2 blocks take the generic activation formula


# --- memory: each activation term against what autograd saves ------------------------------------


def saved_by_autograd(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, autocast: bool) -> tuple[int, int]:
    """Bytes of the distinct tensors autograd keeps for backward (parameters excluded), and the target count."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    labels = ids.masked_fill(mask == 0, -100)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        _, n = causal_lm_loss(logits, labels)
    return sum(seen.values()), n


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize(
    "method",
    [
        FullMethod(),
        LoraMethod(r=8),
        LoraMethod(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"]),
        FreezeMethod(train_last_layers=1),
    ],
    ids=["full", "lora", "lora-no-dropout", "freeze"],
)
def test_activation_terms_match_what_autograd_saves(method, autocast):
    model = apply_method(load_model(ModelConfig(name=PRESET)), method)
    rows, width = 4, 48
    ids = torch.randint(3, 1000, (rows, width), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[0, width // 2 :] = 0  # one padded row: the attention mask reaches SDPA, as in real batches
    saved, n = saved_by_autograd(model, ids, mask, autocast)

    spec = spec_of(model)
    prec = est.Precision.of(4, "bf16" if autocast else "no")
    mb = est.MicroBatch(rows, width, n, masked=True)
    blocks = sum(est.block_activations(spec, i, mb, prec) for i in range(spec.layers))
    copies = memory_terms._weight_copies(
        x for x in spec.linears if x.block is None or x.block >= spec.first_active_block
    )
    loss = 4 * n * spec.vocab + 8 * n + rows * (width - 1)  # the log-softmax, the targets, the label mask
    analytic = blocks + est.head_activations(spec, mb, prec) + (copies if autocast else 0) + loss
    assert analytic == pytest.approx(saved, rel=0.02)


# --- memory and time: the estimate against a probe and a real run ---------------------------------


@pytest.mark.parametrize(
    ("method", "precision"),
    [("full", "no"), ("lora", "no"), ("full", "bf16"), ("lora", "bf16")],
)
def test_estimate_is_within_25_percent_of_the_probed_peak(llama_dir, text_data, method, precision):
    result = estimate(run_config(llama_dir, text_data, method, precision, max_steps=20), probe_steps=3, report=None)
    probe = result.probe
    assert probe is not None and probe.steps == 3 and len(probe.step_seconds) == 3
    assert probe.peak > 50 * 2**20  # far above measurement noise
    assert 0.75 <= probe.ratio <= 1.25, (probe.estimate.peak / 2**20, probe.peak / 2**20)
    # The run's heaviest step weighs at least as much as the probed ones.
    assert result.memory.peak >= probe.estimate.peak
    # Parts add up: the peak holds the weights and AdamW's states, and one of the phases.
    m = result.memory
    assert m.peak >= m.weights + m.optimizer_states + max(m.gradients, m.activations)


def test_plan_matches_the_batches_train_loop_forms(monkeypatch):
    """plan_steps follows train_loop's seeded order, padding and accumulation, so the estimate sees its batches."""
    rng = random.Random(1)
    rows = unpacked([Tokenized([1] * n, [1] * n) for n in (rng.randint(5, 40) for _ in range(23))])
    cfg = TrainConfig(batch_size=4, grad_accum=2, mixed_precision="no", pad_to_multiple_of=8)
    # 3 steps per epoch: crosses one
    plan = est.plan_steps(rows, cfg.batch_size, cfg.grad_accum, seed=3, steps=5, pad_multiple=8)

    import lmtune.train.loop as loop

    seen: list[tuple[int, int]] = []
    real_collate = loop.collate

    def spy(batch_rows, pad_id, *padding):
        out = real_collate(batch_rows, pad_id, *padding)
        seen.append(tuple(out["input_ids"].shape))
        return out

    monkeypatch.setattr(loop, "collate", spy)
    model = load_model(ModelConfig(name=PRESET))
    optimizer, scheduler = make_optimizer(model, cfg, 5)
    from accelerate import Accelerator

    train_loop(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=Accelerator(cpu=True),
        rows=rows,
        pad_id=0,
        cfg=cfg,
        seed=3,
        steps=5,
        state=LoopState(),
        hooks=Hooks(),
    )
    assert seen == [(mb.rows, mb.width) for step in plan for mb in step]


def test_forecast_takes_the_median_rate_and_counts_the_first_step_as_measured():
    tokens = [100, 100, 100, 100, 200, 50]
    times = [1.0, 0.2, 0.2, 0.9]  # a warm-up step, two steady steps, one slowed by something else
    assert measure.forecast_seconds(tokens, times) == pytest.approx(1.0 + 0.002 * (100 + 100 + 100 + 200 + 50))
    # Steps slowed by the memory measurement are left out of the rate.
    assert measure.forecast_seconds(tokens, [1.0, 0.5, 0.2, 0.2], rate_from=2) == pytest.approx(1.0 + 0.002 * 550)


@pytest.mark.slow  # timed: a loaded machine (CI, parallel jobs) moves the real run, not the forecast
def test_probe_forecast_is_within_25_percent_of_a_real_run(llama_dir, text_data):
    cfg = run_config(llama_dir, text_data, "full", "no", max_steps=30)
    forecast = estimate(cfg, probe_steps=10, report=None).probe.forecast_s
    with tempfile.TemporaryDirectory() as tmp:
        real = finetune(cfg, output_dir=str(Path(tmp) / "run"), report=None).summary["train_time_s"]
    assert 0.75 <= forecast / real <= 1.25, (forecast, real)


# --- the command ---------------------------------------------------------------------------------

FIELDS = {
    "total_params",
    "trainable_params",
    "trainable_percent",
    "memory",
    "steps",
    "tokens",
    "trained_tokens",
    "time_s",
    "probe",
    "peak_batch",
    "device",
    "precision",
}
MEMORY_TERMS = {
    f"{term}_bytes"
    for term in ("weights", "gradients", "optimizer_states", "activations", "logits", "autocast_copies", "peak")
}


def test_cli_json_is_one_object_with_the_figures(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "configs/quickstart.yaml", "--json")
    assert code == 0
    result = json.loads(out)  # exactly one JSON document on stdout
    assert set(result) >= FIELDS and set(result["memory"]) >= MEMORY_TERMS
    assert result["probe"] is None
    cfg = load_config(REPO / "configs/quickstart.yaml")
    assert count_parameters(load_model(cfg.model)) == (result["trainable_params"], result["total_params"])
    assert result["steps"] == 500  # 800 examples / 16 per step x 10 epochs


def test_cli_probe_reports_estimate_against_measured(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "configs/quickstart.yaml", "--probe-steps", "3", "--json")
    assert code == 0
    probe = json.loads(out)["probe"]
    assert probe["steps"] == 3 and len(probe["step_seconds"]) == 3
    assert probe["peak_bytes"] > 0 and probe["estimate_bytes"] > 0
    assert probe["estimate_over_measured"] == pytest.approx(probe["estimate_bytes"] / probe["peak_bytes"], abs=1e-3)
    assert "profiler" in probe["measures"] or "cuda" in probe["measures"]

    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "configs/quickstart.yaml", "--probe-steps", "3")
    assert code == 0
    for needle in ("trainable", "peak estimate", "measured peak", "estimate / measured", "forecast"):
        assert needle in out, out


def test_cli_bad_config_exits_2_without_traceback(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train: x.jsonl\ntrain:\n  batch_sise: 4\n", encoding="utf-8")
    code, out, err = run_main(monkeypatch, capsys, "estimate", str(bad), "--json")
    assert code == 2 and out == ""
    assert "Traceback" not in err and "error:" in err and "train.batch_sise" in err


def test_cli_negative_probe_steps_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    code, _, err = run_main(monkeypatch, capsys, "estimate", "configs/quickstart.yaml", "--probe-steps", "-1")
    assert code == 2 and "Traceback" not in err and "--probe-steps" in err
