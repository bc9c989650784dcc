"""Each diagnosis on synthetic curves shaped like the case it names, and silence on a healthy run."""

import math

from lmtune.evaluate.diagnose import diagnose


def run(train: list[float], val: dict[int, float]) -> list[dict]:
    records = [{"split": "train", "step": i + 1, "loss": v} for i, v in enumerate(train)]
    records += [{"split": "validation", "step": s, "loss": v} for s, v in sorted(val.items())]
    return records


def kinds(records: list[dict]) -> list[str]:
    return [f.kind for f in diagnose(records)]


FALLING = [3.0 * 0.98**i for i in range(100)]  # 3.0 -> 0.41


def test_a_healthy_run_has_no_findings() -> None:
    val = {0: 3.1, 25: 1.9, 50: 1.3, 75: 1.1, 100: 1.09}
    healthy = [3.0 * 0.99**i + 0.6 for i in range(100)]
    assert kinds(run(healthy, val)) == []


def test_validation_rising_while_training_falls_is_overfitting() -> None:
    val = {0: 3.1, 25: 1.6, 50: 1.2, 75: 1.5, 100: 1.9}
    (finding, *rest) = diagnose(run(FALLING, val))
    assert finding.kind == "overfitting"
    assert "rose from 1.2000 (step 50) to 1.9000 (step 100)" in finding.message and "step 50" in finding.advice
    assert [f.kind for f in rest] == ["gap"]  # 1.9 vs ~0.43 at the end


def test_flat_training_loss_is_underfitting() -> None:
    flat = [3.0 - 0.001 * i for i in range(100)]
    assert kinds(run(flat, {0: 3.0, 50: 2.97, 100: 2.95})) == ["underfitting"]


def test_still_falling_at_the_end_is_not_converged() -> None:
    val = {0: 3.1, 25: 2.5, 50: 2.0, 75: 1.6, 100: 1.3}
    slow = [3.0 * 0.992**i for i in range(100)]
    assert kinds(run(slow, val)) == ["gap", "not_converged"] or kinds(run(slow, val)) == ["not_converged"]


def test_nan_loss_is_divergence_and_nothing_else() -> None:
    train = [2.0, 1.5, math.nan, math.nan]
    (finding,) = diagnose(run(train, {0: 2.1}))
    assert finding.kind == "diverged" and "step 3" in finding.message and "lower train.lr" in finding.advice


def test_no_training_records_no_findings() -> None:
    assert diagnose([{"split": "validation", "step": 0, "loss": 2.0}]) == []
