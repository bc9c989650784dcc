from __future__ import annotations

import itertools
import signal

import pytest
import torch
from accelerate import Accelerator

from lmtune.config import FullMethod, ModelConfig, TrainConfig
from lmtune.data.batching import Row, collate, pack, unpacked
from lmtune.data.types import IGNORE, Tokenized
from lmtune.errors import Interrupted, LmtuneError
from lmtune.methods import apply_method
from lmtune.model import load_model
from lmtune.train.checkpoint import load_checkpoint, save_checkpoint
from lmtune.train.loop import Hooks, make_optimizer, total_steps, train_loop, warmup_steps
from lmtune.train.objectives import causal_lm_loss, l2sp_penalty
from lmtune.train.state import LoopState
from lmtune.train.validation import evaluate_loss

EXACT = dict(mixed_precision="no", max_grad_norm=None)


@pytest.fixture
def accelerator() -> Accelerator:
    return Accelerator(mixed_precision="no", cpu=True)


def fresh_model() -> torch.nn.Module:
    return apply_method(load_model(ModelConfig(name="preset:tiny-chat")), FullMethod())


def constant_sgd(model: torch.nn.Module, lr: float) -> tuple[torch.optim.Optimizer, object]:
    """Plain SGD: the update is lr x gradient, so any error in the gradient's scale shows in the weights."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def run(model, optimizer, scheduler, accelerator, rows, cfg, steps, state=None, hooks=None, seed=0) -> LoopState:
    return train_loop(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
        rows=rows,
        pad_id=0,
        cfg=cfg,
        seed=seed,
        steps=steps,
        state=state or LoopState(),
        hooks=hooks or Hooks(),
    )


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.allclose(pa, pb, rtol=0, atol=atol), f"{name}: max diff {(pa - pb).abs().max():.3g}"


# --- step arithmetic -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_rows, batch_size, grad_accum, epochs, world, expected",
    [
        (10, 3, 1, 1, 1, 4),  # 4 micro-batches (3 3 3 1)
        (10, 3, 2, 1, 1, 2),  # the last step takes the single leftover micro-batch
        (10, 3, 2, 3, 1, 6),
        (10, 3, 3, 1, 1, 2),
        (9, 3, 1, 2, 1, 6),
        (1, 8, 4, 1, 1, 1),
        (10, 3, 1, 2, 2, 4),  # 2 processes: 4 micro-batches make 2 full steps per epoch
        (5, 1, 2, 1, 2, 1),  # 5 micro-batches, 4 per step: the incomplete step is skipped, as train_loop does
    ],
)
def test_total_steps(n_rows, batch_size, grad_accum, epochs, world, expected):
    cfg = TrainConfig(batch_size=batch_size, grad_accum=grad_accum, epochs=epochs)
    assert total_steps(n_rows, cfg, world) == expected


def test_max_steps_overrides_epochs():
    assert total_steps(10, TrainConfig(batch_size=3, epochs=5, max_steps=7)) == 7


@pytest.mark.parametrize("n_rows, world", [(0, 1), (3, 2), (0, 2)])
def test_too_few_rows_for_one_step_is_an_error(n_rows, world):
    cfg = TrainConfig(batch_size=2, grad_accum=2)
    with pytest.raises(LmtuneError, match=r"train\.batch_size") as info:
        total_steps(n_rows, cfg, world)
    assert "train.grad_accum" in info.value.hint
    with pytest.raises(LmtuneError):
        total_steps(n_rows, cfg.model_copy(update={"max_steps": 5}), world)


def test_warmup_steps():
    assert warmup_steps(TrainConfig(warmup_fraction=0.1), 50) == 5
    assert warmup_steps(TrainConfig(warmup_fraction=0.1, warmup_steps=3), 50) == 3
    assert warmup_steps(TrainConfig(warmup_fraction=0.0), 50) == 0


# --- optimizer -----------------------------------------------------------------------------------


def test_make_optimizer_puts_1d_parameters_in_the_no_decay_group(tiny_model):
    for p in tiny_model.model.layers[0].parameters():
        p.requires_grad_(False)
    optimizer, _ = make_optimizer(tiny_model, TrainConfig(weight_decay=0.1), steps=10)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    trainable = [p for p in tiny_model.parameters() if p.requires_grad]
    assert {id(p) for p in decay["params"]} == {id(p) for p in trainable if p.ndim == 2}
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in trainable if p.ndim == 1}
    norms = [tiny_model.model.layers[1].input_layernorm.weight, tiny_model.model.norm.weight]
    assert all(any(p is q for q in no_decay["params"]) for p in norms)
    assert tiny_model.model.layers[0].input_layernorm.weight.requires_grad is False
    assert not any(p is tiny_model.model.layers[0].input_layernorm.weight for p in no_decay["params"])


def test_make_optimizer_keeps_gpt2_biases_out_of_weight_decay(gpt2_model):
    optimizer, _ = make_optimizer(gpt2_model, TrainConfig(weight_decay=0.1), steps=10)
    decay, no_decay = optimizer.param_groups
    by_id = {id(p): n for n, p in gpt2_model.named_parameters()}
    assert all(by_id[id(p)].endswith(".bias") or ".ln_" in by_id[id(p)] for p in no_decay["params"])
    assert any(by_id[id(p)].endswith("attn.c_attn.bias") for p in no_decay["params"])
    assert all(by_id[id(p)].endswith(".weight") for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(gpt2_model.parameters()))


def test_schedule_warms_up_then_decays(tiny_model):
    optimizer, scheduler = make_optimizer(tiny_model, TrainConfig(lr=1e-3, warmup_steps=2), steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    assert all(a > b for a, b in itertools.pairwise(lrs[2:]))


# --- training ------------------------------------------------------------------------------------


def test_train_loop_lowers_the_loss_on_a_repeated_batch(accelerator, tokenized):
    model = fresh_model()
    rows = unpacked(tokenized[:4])
    cfg = TrainConfig(batch_size=4, lr=1e-2, warmup_steps=0, scheduler="constant", **EXACT)
    optimizer, scheduler = make_optimizer(model, cfg, steps=25)
    records, checkpoints = [], []
    hooks = Hooks(on_log=records.append, on_checkpoint=lambda s: checkpoints.append(s.step))
    state = run(model, optimizer, scheduler, accelerator, rows, cfg, steps=25, hooks=hooks)
    losses = [r["loss"] for r in records]
    assert state.step == 25 and len(losses) == 25
    assert losses[0] > 5.0  # a random model over 1024 tokens starts near ln(1024) ~ 6.9
    assert losses[-1] < 0.5 * losses[0]
    assert state.tokens == 25 * sum(r.trained_tokens for r in rows)
    assert checkpoints == [25]  # always at the end


def test_gradient_accumulation_is_normalised_by_target_tokens(accelerator, tokenized):
    rows = unpacked(tokenized[:4])
    assert len({r.trained_tokens for r in rows}) == 4  # different lengths: a mean of means would differ

    big = fresh_model()
    optimizer, scheduler = constant_sgd(big, lr=1.0)
    run(big, optimizer, scheduler, accelerator, rows, TrainConfig(batch_size=4, grad_accum=1, **EXACT), steps=1)

    accumulated = fresh_model()
    optimizer, scheduler = constant_sgd(accumulated, lr=1.0)
    cfg = TrainConfig(batch_size=2, grad_accum=2, **EXACT)
    state = run(accumulated, optimizer, scheduler, accelerator, rows, cfg, steps=1)
    assert state.step == 1 and state.batches_done == 2

    assert_same_weights(big, accumulated, atol=1e-6)

    # The tolerance can tell: averaging the two micro-batches' own means gives different weights.
    naive = fresh_model()
    optimizer, _ = constant_sgd(naive, lr=1.0)
    for pair in (rows[:2], rows[2:]):
        batch = collate(pair, 0)
        logits = naive(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        loss, n = causal_lm_loss(logits, batch["labels"])
        (loss / n / 2).backward()
    optimizer.step()
    with pytest.raises(AssertionError):
        assert_same_weights(big, naive, atol=1e-6)


def test_padding_to_a_multiple_does_not_change_what_is_learned(accelerator, tokenized):
    rows = unpacked(tokenized[:8])
    models = []
    for multiple in (1, 64, "auto"):
        model = fresh_model()
        optimizer, scheduler = constant_sgd(model, lr=1.0)
        cfg = TrainConfig(batch_size=4, grad_accum=1, pad_to_multiple_of=multiple, **EXACT)
        state = run(model, optimizer, scheduler, accelerator, rows, cfg, steps=2)
        models.append((model, state))
    (plain, plain_state), *padded_runs = models
    for padded, padded_state in padded_runs:
        assert padded_state.tokens == plain_state.tokens  # padding is not trained on
        assert_same_weights(plain, padded, atol=1e-5)


def test_resume_continues_exactly(accelerator, tokenized, tmp_path):
    rows = unpacked(tokenized)  # 6 rows, 3 micro-batches per epoch: 4 steps cross an epoch boundary
    cfg = TrainConfig(batch_size=2, lr=1e-2, warmup_steps=1, weight_decay=0.01, **EXACT)

    straight = fresh_model()
    optimizer, scheduler = make_optimizer(straight, cfg, steps=4)
    run(straight, optimizer, scheduler, accelerator, rows, cfg, steps=4, seed=3)

    first = fresh_model()
    optimizer, scheduler = make_optimizer(first, cfg, steps=4)
    interrupted = LoopState()

    def checkpoint(s: LoopState) -> None:
        save_checkpoint(tmp_path, s.step, first, optimizer, scheduler, s.as_dict(), keep=1)

    hooks = Hooks(on_checkpoint=checkpoint, stop_requested=lambda: interrupted.step >= 2)  # Ctrl-C during step 2
    with pytest.raises(Interrupted):
        run(first, optimizer, scheduler, accelerator, rows, cfg, steps=4, state=interrupted, hooks=hooks, seed=3)
    assert interrupted.step == 2

    second = fresh_model()
    optimizer, scheduler = make_optimizer(second, cfg, steps=4)
    state = LoopState(**load_checkpoint(tmp_path / "checkpoints" / "step-000002", second, optimizer, scheduler))
    assert (state.step, state.epoch, state.batches_done) == (2, 0, 2)
    run(second, optimizer, scheduler, accelerator, rows, cfg, steps=4, state=state, seed=3)
    assert state.step == 4 and state.epoch == 1
    assert_same_weights(straight, second)


def test_train_loop_refuses_rows_too_few_for_a_step(accelerator):
    model = fresh_model()
    optimizer, scheduler = constant_sgd(model, lr=0.1)

    def timeout(signum, frame):
        raise TimeoutError("train_loop kept looping over empty epochs")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    try:
        with pytest.raises(LmtuneError, match="too few"):
            run(model, optimizer, scheduler, accelerator, [], TrainConfig(**EXACT), steps=1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- evaluation ----------------------------------------------------------------------------------


def test_evaluate_loss_is_token_weighted_and_the_same_packed(accelerator, tiny_model, tokenized):
    rows = unpacked(tokenized)
    tiny_model.train()
    result = evaluate_loss(tiny_model, rows, batch_size=4, pad_id=0, accelerator=accelerator)
    n = sum(r.trained_tokens for r in rows)
    assert result["tokens"] == n
    total = 0.0
    with torch.no_grad():
        tiny_model.eval()
        for r in rows:
            batch = collate([r], 0)
            total += float(causal_lm_loss(tiny_model(input_ids=batch["input_ids"]).logits, batch["labels"])[0])
    assert result["loss"] == pytest.approx(total / n, rel=1e-5)
    assert result["perplexity"] == pytest.approx(torch.tensor(total / n).exp().item(), rel=1e-5)
    packed = evaluate_loss(tiny_model, pack(tokenized, 200), batch_size=2, pad_id=0, accelerator=accelerator)
    assert packed["tokens"] == n
    assert packed["loss"] == pytest.approx(result["loss"], rel=1e-5)
    tiny_model.train()
    evaluate_loss(tiny_model, rows[:1], batch_size=1, pad_id=0, accelerator=accelerator)
    assert tiny_model.training  # the model's mode is restored


def test_row_trained_tokens_skip_the_first_position():
    assert Row([1, 2, 3], [IGNORE, 2, 3]).trained_tokens == 2
    assert Row([1, 2, 3], [1, IGNORE, 3]).trained_tokens == 1
    assert unpacked([Tokenized([1, 2], [1, 2])])[0].trained_tokens == 1


# --- L2-SP ---------------------------------------------------------------------------------------


def test_l2sp_penalty_is_the_squared_distance_to_the_anchors():
    params = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)]
    anchors = [torch.tensor([0.5, 2.0]), torch.tensor([[1.0]])]
    penalty = l2sp_penalty(params, anchors)
    assert float(penalty.detach()) == pytest.approx(0.25 + 0.0 + 4.0)
    penalty.backward()
    assert params[0].grad.tolist() == [1.0, 0.0] and params[1].grad.tolist() == [[4.0]]  # 2 (w - w0)


def test_l2sp_adds_its_exact_gradient_to_each_step(accelerator, tokenized):
    """One SGD step with L2-SP moves every weight by lr * 2 * l2sp * (w - w0) more than the same step without."""
    rows = unpacked(tokenized[:4])
    lr, strength = 0.5, 0.3
    plain = fresh_model()
    optimizer, scheduler = constant_sgd(plain, lr)
    run(plain, optimizer, scheduler, accelerator, rows, TrainConfig(batch_size=4, **EXACT), steps=1)

    pulled = fresh_model()
    start = [p.detach().clone() for p in pulled.parameters()]
    anchors = [p + 0.01 * torch.randn_like(p) for p in start]  # as if training had already moved off w0
    optimizer, scheduler = constant_sgd(pulled, lr)
    records: list[dict] = []
    train_loop(
        model=pulled,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
        rows=rows,
        pad_id=0,
        cfg=TrainConfig(batch_size=4, l2sp=strength, **EXACT),
        seed=0,
        steps=1,
        state=LoopState(),
        hooks=Hooks(on_log=records.append),
        anchors=anchors,
    )
    for p_plain, p_pulled, w, w0 in zip(plain.parameters(), pulled.parameters(), start, anchors, strict=True):
        torch.testing.assert_close(p_pulled, p_plain - lr * 2 * strength * (w - w0), rtol=0, atol=1e-6)
    expected = strength * sum(float(((w - w0) ** 2).sum()) for w, w0 in zip(start, anchors, strict=True))
    assert records[0]["l2sp"] == pytest.approx(expected, rel=1e-5)


def test_l2sp_needs_the_anchors(accelerator, tokenized):
    model = fresh_model()
    optimizer, scheduler = constant_sgd(model, 0.1)
    with pytest.raises(ValueError, match="anchors"):
        run(model, optimizer, scheduler, accelerator, unpacked(tokenized), TrainConfig(l2sp=0.1, **EXACT), steps=1)
