"""FSDP2-sharded training (2 processes, gloo on CPU) saves checkpoints, best weights and the final model whole, and
a checkpoint resumes on another number of processes, sharded or not (tests/fsdp_worker.py runs each side)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fsdp_worker import check_best_and_final_adapter, close, final_loss, run
from transformers import AutoModelForCausalLM


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("fsdp-lora")
    two = run(root / "two", "lora", 2)
    # One process accumulates the two micro-batches the two processes take one each of: the same global batch.
    one = run(root / "one", "lora", 1, "--grad-accum", "2")
    two_on_one = run(root / "two-on-one", "lora", 1, "--grad-accum", "2", "--resume", str(root / "two/checkpoints/step-000002"))  # fmt: skip
    one_on_two = run(root / "one-on-two", "lora", 2, "--resume", str(root / "one/checkpoints/step-000002"))
    return {"root": root, "two": two, "one": one, "two-on-one": two_on_one, "one-on-two": one_on_two}


def test_sharded_training_matches_one_process_at_the_same_global_batch(lora_runs: dict) -> None:
    two, one = lora_runs["two"], lora_runs["one"]
    assert two["sharded"] and not one["sharded"]
    assert close(two["losses"], one["losses"], 1e-5)
    # The validation losses (5 rows over 2 processes: 3 and 2 batches) are the one-process ones.
    assert close(two["validation"], one["validation"], 1e-5)


def test_checkpoints_resume_on_another_number_of_processes(lora_runs: dict) -> None:
    two, one = lora_runs["two"], lora_runs["one"]
    for resumed, source in ((lora_runs["two-on-one"], two), (lora_runs["one-on-two"], one)):
        assert resumed["loaded"] == 0.0  # weights and optimizer states are back exactly, resharded
        assert close(resumed["losses"], source["losses"][2:], 1e-5)  # steps 3-4 as the saving run made them


def test_best_weights_and_final_adapter_of_a_sharded_run(lora_runs: dict) -> None:
    check_best_and_final_adapter(lora_runs["root"] / "two", lora_runs["two"])


def test_full_fine_tuning_saves_and_resumes_whole_weights(tmp_path: Path) -> None:
    two = run(tmp_path / "two", "full", 2)
    assert two["sharded"]
    resumed = run(tmp_path / "resumed", "full", 1, "--grad-accum", "2", "--resume", str(tmp_path / "two/checkpoints/step-000002"))  # fmt: skip
    assert resumed["loaded"] == 0.0
    # Full fine-tuning with Adam magnifies the rounding differences of summing gradients in another order.
    assert close(resumed["losses"][:1], two["losses"][2:3], 1e-5)
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "final", use_safetensors=True)
    assert abs(final_loss(final) - two["validation"][-1]) <= 1e-5 * two["validation"][-1]
