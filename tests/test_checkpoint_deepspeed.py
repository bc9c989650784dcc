"""DeepSpeed ZeRO (2 processes on its CPU accelerator, gloo) trains as one process does at the same global batch,
and its checkpoints, best weights and final model are whole tensors that resume anywhere: ZeRO-2 on one plain
process, one plain process on ZeRO-3 (tests/fsdp_worker.py runs each side, as `accelerate launch` with a DeepSpeed
config sets it up)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fsdp_worker import check_best_and_final_adapter, close, final_loss, run
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

pytest.importorskip("deepspeed")


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("zero-lora")
    zero2 = run(root / "zero2", "lora", 2, zero=2)
    # One process accumulates the two micro-batches the two processes take one each of: the same global batch.
    one = run(root / "one", "lora", 1, "--grad-accum", "2")
    zero2_on_one = run(root / "zero2-on-one", "lora", 1, "--grad-accum", "2", "--resume", str(root / "zero2/checkpoints/step-000002"))  # fmt: skip
    one_on_zero3 = run(root / "one-on-zero3", "lora", 2, "--resume", str(root / "one/checkpoints/step-000002"), zero=3)  # fmt: skip
    return {"root": root, "zero2": zero2, "one": one, "zero2-on-one": zero2_on_one, "one-on-zero3": one_on_zero3}


def test_zero_training_matches_one_process_at_the_same_global_batch(lora_runs: dict) -> None:
    zero2, one = lora_runs["zero2"], lora_runs["one"]
    assert zero2["deepspeed"] and not one["deepspeed"]
    # ZeRO-2 keeps the head whole, so the chunked loss runs as on one process; ZeRO-3 partitions it.
    assert zero2["chunked_loss"] and one["chunked_loss"] and not lora_runs["one-on-zero3"]["chunked_loss"]
    assert close(zero2["losses"], one["losses"], 1e-5)
    assert close(zero2["validation"], one["validation"], 1e-5)


def test_zero_checkpoints_resume_on_one_process_and_the_other_way_round(lora_runs: dict) -> None:
    one = lora_runs["one"]
    for resumed, source in ((lora_runs["zero2-on-one"], lora_runs["zero2"]), (lora_runs["one-on-zero3"], one)):
        assert resumed["loaded"] == 0.0  # weights, Adam moments and step count are back exactly
        assert close(resumed["losses"], source["losses"][2:], 1e-5)  # steps 3-4 as the saving run made them
    # ZeRO-3 partitions the weights themselves: its evaluations are collective, and match one process's.
    assert lora_runs["one-on-zero3"]["sharded"]
    assert close(lora_runs["one-on-zero3"]["validation"][1:], one["validation"][1:], 1e-5)


def test_best_weights_and_final_adapter_of_a_zero_run(lora_runs: dict) -> None:
    check_best_and_final_adapter(lora_runs["root"] / "zero2", lora_runs["zero2"])


def test_full_fine_tuning_under_zero3_saves_whole_weights(tmp_path: Path) -> None:
    zero3 = run(tmp_path / "zero3", "full", 2, zero=3)
    one = run(tmp_path / "one", "full", 1, "--grad-accum", "2")
    assert zero3["sharded"]
    assert close(zero3["losses"][:2], one["losses"][:2], 1e-4)
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3" / "final", use_safetensors=True)
    assert abs(final_loss(final) - zero3["validation"][-1]) <= 1e-5 * zero3["validation"][-1]


def test_a_bf16_zero_run_resumes_exactly_from_its_fp32_master_weights(tmp_path: Path) -> None:
    """In bf16 DeepSpeed computes with bf16 weights and steps fp32 master copies: the checkpoint holds the masters,
    so the resumed run goes on with the very weights and moments the saving run had."""
    zero2 = run(tmp_path / "zero2", "lora", 2, "--bf16", zero=2)
    resumed = run(tmp_path / "resumed", "lora", 2, "--bf16", "--resume", str(tmp_path / "zero2/checkpoints/step-000002"), zero=2)  # fmt: skip
    assert resumed["loaded"] == 0.0
    assert close(resumed["losses"], zero2["losses"][2:], 1e-6)
    weights = load_file(str(tmp_path / "zero2/checkpoints/step-000002/trainable.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    # The masters, not the bf16 weights upcast: they hold values bf16 cannot.
    assert any(bool((w != w.bfloat16().float()).any()) for w in weights.values())


def test_a_non_finite_step_under_zero_is_skipped_and_counted(tmp_path: Path) -> None:
    """lr 1e30 makes the gradients of the second step infinite: ZeRO's overflow check skips those updates, and the loop
    counts them as skipped (metrics.jsonl `skipped`), so the divergence guard sees them; the weights stay finite."""
    zero2 = run(tmp_path / "zero2", "full", 2, "--lr", "1e30", "--max-bad-steps", "10", zero=2)
    assert zero2["skipped"], zero2["losses"]
    assert all(step > 1 for step in zero2["skipped"])  # the first update, from a sane loss, is taken
    final = load_file(str(tmp_path / "zero2" / "final" / "model.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in final.values())
