from __future__ import annotations

import torch
import torch.nn.functional as F

from lmtune.data.batching import collate, pack, unpacked
from lmtune.data.types import IGNORE
from lmtune.train.objectives import causal_lm_loss


def random_batch(seed: int = 0, batch: int = 3, length: int = 9, vocab: int = 17):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=g)
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[torch.rand(batch, length, generator=g) < 0.4] = IGNORE
    return logits, labels


def test_causal_lm_loss_is_the_summed_cross_entropy_of_the_shifted_masked_positions():
    logits, labels = random_batch()
    loss, n = causal_lm_loss(logits, labels)
    # position t predicts the label at t + 1
    terms = [
        F.cross_entropy(logits[b, t], labels[b, t + 1])
        for b in range(labels.shape[0])
        for t in range(labels.shape[1] - 1)
        if labels[b, t + 1] != IGNORE
    ]
    assert n == len(terms) == int((labels[:, 1:] != IGNORE).sum())
    assert torch.allclose(loss, torch.stack(terms).sum(), rtol=1e-6)
    reference = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    assert torch.allclose(loss, reference, rtol=1e-6)


def test_the_first_label_is_never_used():
    logits, labels = random_batch(seed=1)
    other = labels.clone()
    other[:, 0] = 3
    assert torch.equal(causal_lm_loss(logits, labels)[0], causal_lm_loss(logits, other)[0])
    assert causal_lm_loss(logits, labels)[1] == causal_lm_loss(logits, other)[1]


def test_all_masked_gives_zero_with_a_graph():
    logits = torch.randn(2, 5, 11, requires_grad=True)
    labels = torch.full((2, 5), IGNORE)
    labels[:, 0] = 1  # only unpredicted first positions are labelled
    loss, n = causal_lm_loss(logits, labels)
    assert n == 0
    assert loss.item() == 0.0
    loss.backward()  # a micro-batch with nothing to learn must not break the backward pass
    assert torch.count_nonzero(logits.grad) == 0


def test_low_precision_logits_are_reduced_in_float32():
    logits, labels = random_batch(seed=2)
    loss, _ = causal_lm_loss(logits.to(torch.bfloat16), labels)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, causal_lm_loss(logits.to(torch.bfloat16).float(), labels)[0])


# --- packed and unpacked loss agree ---------------------------------------------------------------


def summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits
    loss, n = causal_lm_loss(logits, batch["labels"])
    return float(loss), n


def test_packed_and_unpacked_loss_agree(tiny_model, tokenizer, tokenized):
    model = tiny_model.eval()
    pad = tokenizer.pad_token_id
    lengths = [len(t.input_ids) for t in tokenized]
    assert len(set(lengths)) == len(lengths)  # the examples differ in length

    # (a) one example per row, no padding
    per_example = [summed_loss(model, collate([row], pad)) for row in unpacked(tokenized)]
    loss_a, n_a = sum(x for x, _ in per_example), sum(n for _, n in per_example)

    # (b) packed rows, several examples per row (and padding in the shorter rows)
    rows = pack(tokenized, max_length=max(lengths) + 40)
    assert len(rows) < len(tokenized) and any(len(r.position_ids) > max(lengths) for r in rows)
    packed_batch = collate(rows, pad)
    loss_b, n_b = summed_loss(model, packed_batch)

    assert n_a == n_b == sum(r.trained_tokens for r in rows)
    tolerance = 1e-5 * abs(loss_a)
    assert abs(loss_b - loss_a) <= tolerance

    # Without the position resets every token attends to the examples before it in the row (and its positions
    # run on): the loss changes, so the check above would catch broken masking.
    plain = dict(packed_batch)
    plain["position_ids"] = torch.arange(packed_batch["input_ids"].shape[1]).expand_as(packed_batch["input_ids"])
    loss_c, n_c = summed_loss(model, plain)
    assert n_c == n_b
    assert abs(loss_c - loss_a) > 3 * tolerance  # (about 10x on the random-init preset)

    # ...and so does resetting positions while letting attention cross the examples (a causal mask over the row)
    crossing = dict(packed_batch)
    crossing["attention_mask"] = torch.zeros_like(packed_batch["input_ids"])
    for i, r in enumerate(rows):
        crossing["attention_mask"][i, : len(r.input_ids)] = 1
    loss_d, _ = summed_loss(model, crossing)
    assert abs(loss_d - loss_a) > 3 * tolerance  # (about 10x on the random-init preset)


def test_padded_unpacked_batch_matches_one_row_per_example(tiny_model, tokenizer, tokenized):
    model = tiny_model.eval()
    pad = tokenizer.pad_token_id
    rows = unpacked(tokenized)
    singles = [summed_loss(model, collate([row], pad)) for row in rows]
    batched = summed_loss(model, collate(rows, pad))
    assert batched[1] == sum(n for _, n in singles)
    assert abs(batched[0] - sum(x for x, _ in singles)) <= 1e-5 * batched[0]
