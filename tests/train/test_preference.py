"""The preference losses and batch step against trl 1.16's own code: the same tokens, losses and gradients.

Each comparison builds the trl trainer on a tiny dataset (cheap: a few pairs, nothing trained), takes a batch from
its collator and calls its loss code on a tiny LoRA Llama, then runs `preference_step` on lmtune's own tokenization
of the same pairs and compares the loss and the gradient of every trainable parameter. The adapter is randomised
after the trainer is built (trl copies the fresh, zero adapter as its "ref" adapter: the base model), so policy and
reference differ and every loss has a non-trivial gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import LlamaForSequenceClassification, PreTrainedTokenizerBase

from lmtune.config import ModelConfig
from lmtune.data.formats import Message
from lmtune.data.pairs import PairRow, collate_pairs, tokenize_pairs
from lmtune.data.preferences import PreferencePair, to_trl
from lmtune.data.types import IGNORE
from lmtune.model import load_model, load_tokenizer
from lmtune.train.preference import DPO_LOSS_TYPES, kto_kl, kto_loss, sequence_logps
from lmtune.train.preference_step import (
    ADAPTER_DISABLED,
    PRECOMPUTED,
    PreferenceSettings,
    preference_step,
    reference_logps,
)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Overrides conftest's reset: the trl trainers built once per module here keep the process-wide state."""
    yield


PRESET = "preset:tiny-chat"
LOSS_ATOL, GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-4, 1e-6


def chat_pairs() -> list[PreferencePair]:
    return [
        PreferencePair(
            (Message("system", "Be brief."), Message("user", f"What is {i} plus {i + 2}?")),
            (Message("assistant", f"{i} plus {i + 2} is {2 * i + 2}."),),
            (Message("assistant", "I do not know" + " really" * i),),
            "mem",
            i + 1,
        )
        for i in range(4)
    ]


def plain_pairs() -> list[PreferencePair]:
    return [
        PreferencePair(f"Question: what is {i} times 3?\nAnswer:", f" {3 * i}", " many" * (i + 1), "mem", i + 1)
        for i in range(4)
    ]


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerBase:
    return load_tokenizer(ModelConfig(name=PRESET))


def lora_policy(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    model = load_model(ModelConfig(name=PRESET))
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"])
    return get_peft_model(model, config)


def randomise_adapter(model: Any, seed: int = 1) -> Any:
    """Policy != reference: the default adapter's B matrices (zero when fresh) get random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B.default." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def trl_args(config_class: type, tmp: Path, **extra: Any) -> Any:
    return config_class(
        output_dir=str(tmp),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=4,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )


def loss_and_grads(model: torch.nn.Module, compute: Callable[[], torch.Tensor]) -> tuple[float, dict[str, Any]]:
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def assert_same(trl_loss: float, trl_grads: dict, our_loss: float, our_grads: dict, what: str) -> None:
    assert trl_grads and trl_grads.keys() == our_grads.keys(), what
    grad_diff = max(float((trl_grads[n] - our_grads[n]).abs().max()) for n in trl_grads)
    scale = max(float(g.abs().max()) for g in trl_grads.values())
    print(f"\n{what}: loss trl {trl_loss:.6f} ours {our_loss:.6f} |diff| {abs(trl_loss - our_loss):.2e}; "
          f"max |grad diff| {grad_diff:.2e} (max |grad| {scale:.2e})")  # fmt: skip
    assert scale > 0, f"{what}: no gradient to compare"
    assert our_loss == pytest.approx(trl_loss, abs=LOSS_ATOL), what
    for n in trl_grads:
        torch.testing.assert_close(our_grads[n], trl_grads[n], rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=f"{what}: {n}")


def test_sequence_logps_is_the_log_softmax_of_the_labelled_next_tokens() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=gen, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, 11, (3, 6), generator=gen)
    labels[:, :2] = IGNORE
    labels[1, 4:] = IGNORE
    weights = torch.randn(3, generator=gen, dtype=torch.float64)

    def naive(x: torch.Tensor) -> torch.Tensor:
        picked = torch.log_softmax(x[:, :-1].float(), -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
        return (picked * (labels[:, 1:] != IGNORE)).sum(-1)

    for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 1e-2)):
        x = logits.detach().to(dtype).requires_grad_()
        logps, n = sequence_logps(x, labels)
        assert logps.dtype == torch.float32 and n.tolist() == [4, 2, 4]
        (grad,) = torch.autograd.grad((logps * weights.float()).sum(), x)
        x_ref = logits.detach().to(dtype).requires_grad_()
        expected = naive(x_ref)
        (expected_grad,) = torch.autograd.grad((expected * weights.float()).sum(), x_ref)
        torch.testing.assert_close(logps, expected, rtol=tol, atol=tol)
        torch.testing.assert_close(grad, expected_grad, rtol=tol, atol=tol)


@pytest.fixture(scope="module", params=["chat", "plain"])
def dpo_case(request: Any, tok: PreTrainedTokenizerBase, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    chat = request.param == "chat"
    pairs = chat_pairs() if chat else plain_pairs()
    policy = lora_policy()
    trainer = DPOTrainer(
        model=policy,
        ref_model=None,
        args=trl_args(DPOConfig, tmp_path_factory.mktemp("dpo"), beta=0.1, max_length=None),
        train_dataset=Dataset.from_list([to_trl(p, chat) for p in pairs]),
        processing_class=tok,
    )
    randomise_adapter(policy)
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    rows, _ = tokenize_pairs(pairs, tok, max_length=512, chat=chat)
    return {
        "trainer": trainer,
        "policy": policy,
        "trl_batch": trl_batch,
        "batch": collate_pairs(rows, tok.pad_token_id),
    }


def test_pairs_are_tokenized_as_trl_tokenizes_them(dpo_case: dict[str, Any]) -> None:
    trl_batch, batch = dpo_case["trl_batch"], dpo_case["batch"]
    assert torch.equal(batch["input_ids"], trl_batch["input_ids"])
    assert torch.equal(batch["attention_mask"], trl_batch["attention_mask"])
    assert torch.equal(batch["labels"], trl_batch["input_ids"].masked_fill(trl_batch["completion_mask"] == 0, IGNORE))


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_dpo_loss_and_gradients_match_trl(dpo_case: dict[str, Any], loss_type: str) -> None:
    trainer, policy = dpo_case["trainer"], dpo_case["policy"]
    trainer.loss_types, trainer.loss_weights, trainer.label_smoothing = [loss_type], [1.0], 0.1
    policy.train()
    trl_loss, trl_grads = loss_and_grads(policy, lambda: trainer.compute_loss(policy, dict(dpo_case["trl_batch"])))
    settings = PreferenceSettings(beta=0.1, loss_type=loss_type, label_smoothing=0.1)
    out: dict[str, Any] = {}

    def ours() -> torch.Tensor:
        loss, n, out["metrics"] = preference_step(
            policy, dpo_case["batch"], kind="dpo", settings=settings, reference=ADAPTER_DISABLED
        )
        return loss / n

    our_loss, our_grads = loss_and_grads(policy, ours)
    assert_same(trl_loss, trl_grads, our_loss, our_grads, f"dpo {loss_type}")
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    n = dpo_case["batch"]["input_ids"].shape[0] // 2
    for ours_key, trl_key in (("accuracy", "accuracies"), ("margin", "margins"), ("reward_chosen", "chosen")):
        assert out["metrics"][ours_key] / n == pytest.approx(logged[f"rewards/{trl_key}"], abs=1e-5)


def orpo_cpo_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lmtune's collated pair batch in the keys of trl's ORPO/CPO trainers (chosen_*, rejected_*)."""
    n = batch["input_ids"].shape[0] // 2
    out = {}
    for side, part in (("chosen", slice(None, n)), ("rejected", slice(n, None))):
        out[f"{side}_input_ids"] = batch["input_ids"][part]
        out[f"{side}_attention_mask"] = batch["attention_mask"][part]
        out[f"{side}_labels"] = batch["labels"][part]
    return out


def reference_free_trainer(kind: str, policy: Any, tok: PreTrainedTokenizerBase, tmp: Path, **extra: Any) -> Any:
    if kind == "orpo":
        from trl.experimental.orpo import ORPOConfig as Config
        from trl.experimental.orpo import ORPOTrainer as Trainer
    else:
        from trl.experimental.cpo import CPOConfig as Config
        from trl.experimental.cpo import CPOTrainer as Trainer
    data = Dataset.from_list([to_trl(p, False) for p in plain_pairs()])
    return Trainer(model=policy, args=trl_args(Config, tmp, **extra), train_dataset=data, processing_class=tok)


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("orpo", {"beta": 0.25}),
        ("simpo", {"beta": 2.0, "simpo_gamma": 0.5, "cpo_alpha": 0.0, "label_smoothing": 0.1}),
        ("simpo", {"beta": 2.0, "simpo_gamma": 0.8, "cpo_alpha": 1.0}),
    ],
)
def test_orpo_and_simpo_match_trl(kind: str, extra: dict, tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    policy = randomise_adapter(lora_policy())
    options = {**extra, "loss_type": "simpo"} if kind == "simpo" else extra
    trainer = reference_free_trainer(kind, policy, tok, tmp_path, **options)
    rows, _ = tokenize_pairs(plain_pairs(), tok, max_length=512)
    batch = collate_pairs(rows, tok.pad_token_id)
    policy.train()
    trl_loss, trl_grads = loss_and_grads(
        policy, lambda: trainer.get_batch_loss_metrics(policy, orpo_cpo_batch(batch))[0]
    )
    settings = PreferenceSettings(**{k: v for k, v in extra.items()})

    def ours() -> torch.Tensor:
        loss, n, _ = preference_step(policy, batch, kind=kind, settings=settings)
        return loss / n

    our_loss, our_grads = loss_and_grads(policy, ours)
    assert_same(trl_loss, trl_grads, our_loss, our_grads, f"{kind} {extra}")


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_kto_loss_and_gradients_match_trl(loss_type: str, tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    from trl import KTOConfig, KTOTrainer

    policy = lora_policy()
    examples = [
        {"prompt": f"Question: what is {i} times 3?\nAnswer:", "completion": f" {3 * i}" if i % 2 else " many" * i,
         "label": bool(i % 2)}
        for i in range(1, 5)
    ]  # fmt: skip
    args = trl_args(KTOConfig, tmp_path, beta=0.2, loss_type=loss_type, desirable_weight=1.0, undesirable_weight=1.5)
    trainer = KTOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(examples), processing_class=tok)
    randomise_adapter(
        policy, seed=6
    )  # a seed whose policy puts more mass than the base on the mismatched pairs: KL > 0
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(examples))])
    policy.train()
    trl_loss, trl_grads = loss_and_grads(policy, lambda: trainer.compute_loss(policy, dict(trl_batch)))

    def logps(prefix: str) -> torch.Tensor:
        labels = trl_batch[f"{prefix}input_ids"].masked_fill(trl_batch[f"{prefix}completion_mask"] == 0, IGNORE)
        inputs = {"input_ids": trl_batch[f"{prefix}input_ids"], "attention_mask": trl_batch[f"{prefix}attention_mask"]}
        return sequence_logps(policy(**inputs).logits, labels)[0]

    seen: dict[str, float] = {}

    def ours() -> torch.Tensor:
        desirable = trl_batch["label"].bool()
        with torch.no_grad(), policy.disable_adapter():
            ref = logps("")
            ref_kl = logps("KL_") if loss_type == "kto" else None
        with torch.no_grad():
            kl = kto_kl(logps("KL_"), ref_kl) if ref_kl is not None else 0.0
        seen["kl"] = float(kl)
        pol = logps("")
        losses, _, _ = kto_loss(
            pol[desirable], ref[desirable], pol[~desirable], ref[~desirable], kl,
            beta=0.2, desirable_weight=1.0, undesirable_weight=1.5, loss_type=loss_type,
        )  # fmt: skip
        return losses.mean()

    our_loss, our_grads = loss_and_grads(policy, ours)
    assert_same(trl_loss, trl_grads, our_loss, our_grads, f"kto {loss_type} (KL estimate {seen['kl']:.4f})")
    if loss_type == "kto":
        assert seen["kl"] > 0.01 and seen["kl"] == pytest.approx(trainer._metrics["train"]["kl"][-1], abs=1e-6)


@pytest.mark.parametrize(("margin", "center"), [(False, None), (True, 0.01)])
def test_reward_loss_and_gradients_match_trl(
    margin: bool, center: float | None, tok: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    from trl import RewardConfig, RewardTrainer

    base = load_model(ModelConfig(name=PRESET))
    config = copy.deepcopy(base.config)
    config.num_labels, config.pad_token_id = 1, tok.pad_token_id
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    pairs = plain_pairs()
    records = [to_trl(p, False) | ({"margin": 0.5 * i} if margin else {}) for i, p in enumerate(pairs)]
    args = trl_args(RewardConfig, tmp_path, center_rewards_coefficient=center)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tok)
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    rows, _ = tokenize_pairs(pairs, tok, max_length=512, for_reward=True)
    batch = collate_pairs(rows, tok.pad_token_id)
    assert torch.equal(batch["input_ids"], trl_batch["input_ids"])
    assert torch.equal(batch["attention_mask"], trl_batch["attention_mask"])
    if margin:
        batch["margin"] = trl_batch["margin"]
    model.train()
    trl_loss, trl_grads = loss_and_grads(model, lambda: trainer.compute_loss(model, dict(trl_batch)))
    out: dict[str, Any] = {}

    def ours() -> torch.Tensor:
        settings = {"center_rewards_coefficient": center}
        loss, n, out["metrics"] = preference_step(model, batch, kind="reward", settings=settings)
        return loss / n

    our_loss, our_grads = loss_and_grads(model, ours)
    assert_same(trl_loss, trl_grads, our_loss, our_grads, f"reward margin={margin} center={center}")
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert out["metrics"]["accuracy"] / len(pairs) == pytest.approx(logged["accuracy"], abs=1e-6)
    assert out["metrics"]["margin"] / len(pairs) == pytest.approx(logged["margin"], abs=1e-5)


def test_the_disabled_adapter_is_the_frozen_base_and_precomputed_logps_give_the_same_loss(
    tok: PreTrainedTokenizerBase,
) -> None:
    torch.manual_seed(0)
    base = load_model(ModelConfig(name=PRESET))
    frozen = copy.deepcopy(base).eval().requires_grad_(False)
    policy = randomise_adapter(get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])))
    policy.eval()
    rows, _ = tokenize_pairs(chat_pairs(), tok, max_length=512, chat=True)
    batch = collate_pairs(rows, tok.pad_token_id)
    by_adapter = reference_logps(policy, batch, ADAPTER_DISABLED)
    by_copy = reference_logps(policy, batch, frozen)
    diff = max(float((a - b).abs().max()) for a, b in zip(by_adapter, by_copy, strict=True))
    print(f"\nreference: adapter disabled vs frozen copy, max |logp diff| {diff:.2e}")
    assert diff < 1e-5
    with torch.no_grad():
        policy_logps = sequence_logps(policy(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits,
                                      batch["labels"])[0]  # fmt: skip
    assert (policy_logps - torch.cat(by_copy)).abs().max() > 0.01  # the adapter does change the policy
    rows = [
        PairRow(r.chosen_ids, r.chosen_labels, r.rejected_ids, r.rejected_labels, float(c), float(j))
        for r, c, j in zip(rows, *by_adapter, strict=True)
    ]
    carried = collate_pairs(rows, tok.pad_token_id)
    with torch.no_grad():
        steps = [preference_step(policy, b, kind="dpo", reference=ref)
                 for b, ref in ((batch, ADAPTER_DISABLED), (batch, frozen), (carried, PRECOMPUTED))]  # fmt: skip
    losses = [float(s[0]) for s in steps]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5) and losses[2] == pytest.approx(losses[0], abs=1e-5)
    assert steps[0][2] == pytest.approx(steps[2][2], abs=1e-4)
