"""Preference pairs (tasks dpo, reward) tokenized into rows lmtune's loop batches, one forward pass per batch.

A pair is tokenized the way trl 1.16's DPOTrainer and RewardTrainer tokenize it, so moving off trl changes no token:
  - chat (data.template chat, or pairs given as messages): the prompt rendered by the tokenizer's chat template with
    the generation prompt, and prompt + answer rendered as one conversation; the template writes its own special
    tokens and end-of-turn markers, so nothing is added;
  - plain strings: prompt + answer as one text with the tokenizer's own special tokens (Llama's BOS), ended by EOS.
The answer starts where the tokens of the prompt alone and of prompt + answer first differ (trl's
`common_prefix_length`): a prompt ending in a space can merge with the answer's first word, and that token is trained.

Tokenizers without an EOS token (BERT, MiniLM: encoders used as reward models) end nothing with EOS. Where they have
a separator token, prompt and answer are encoded as the tokenizer's text pair, which writes the separator its
pre-training used ([CLS] prompt [SEP] answer [SEP] for BERT; segment ids are not carried, the model reads them as 0);
with neither EOS nor separator, prompt and answer are concatenated as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

from lmtune.data.batching import padded_width
from lmtune.data.long_text import encode_text, special_affixes
from lmtune.data.preferences import PreferencePair, is_conversational
from lmtune.data.types import IGNORE, TokenStats
from lmtune.errors import LmtuneError

if TYPE_CHECKING:
    import torch

OVERLONG = ("truncate", "drop")


@dataclass(frozen=True)
class PairRow:
    """A tokenized pair: the whole chosen and rejected sequences, labels IGNORE on the prompt (reward models read
    the whole sequences and no labels). Reference log-probs, when computed once before training, ride along."""

    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]
    ref_chosen_logp: float | None = None
    ref_rejected_logp: float | None = None

    @property
    def trained_tokens(self) -> int:
        """The loop's normaliser unit: preference losses are means over pairs, so a pair counts 1."""
        return 1

    @property
    def length(self) -> int:
        return max(len(self.chosen_ids), len(self.rejected_ids))


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):  # prefixes of different lengths
        if x != y:
            break
        n += 1
    return n


def _messages(content: Any, role: str) -> list[dict[str, str]]:
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    return [{"role": m.role, "content": m.content} for m in content]


def _chat_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], generation: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    # As apply_chat_template(tokenize=True): the rendered text already holds the template's special tokens.
    return encode_text(tokenizer, text)  # in pieces when long (data/long_text.py)


def encode_pair(
    pair: PreferencePair, tokenizer: PreTrainedTokenizerBase, *, chat: bool = False
) -> tuple[int, list[int], list[int]]:
    """(prompt length, chosen ids, rejected ids) of a pair, untruncated; both sequences share the first
    `prompt length` tokens, the prompt, and the rest of each is its answer."""
    if chat or is_conversational(pair):
        if not tokenizer.chat_template:
            raise LmtuneError(
                "the tokenizer has no chat template to render chat pairs with",
                hint="set data.chat_template to a built-in template ('chatml' or 'plain') or a Jinja template",
            )
        prompt = _messages(pair.prompt, "user")
        prompt_ids = _chat_ids(tokenizer, prompt, True)
        chosen = _chat_ids(tokenizer, prompt + _messages(pair.chosen, "assistant"), False)
        rejected = _chat_ids(tokenizer, prompt + _messages(pair.rejected, "assistant"), False)
    else:
        assert isinstance(pair.prompt, str) and isinstance(pair.chosen, str) and isinstance(pair.rejected, str)
        prompt_ids, chosen, rejected = (_plain_ids(tokenizer, pair.prompt, a) for a in ("", pair.chosen, pair.rejected))
    n = min(common_prefix_length(prompt_ids, chosen), common_prefix_length(prompt_ids, rejected))
    return n, chosen, rejected


def _plain_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str) -> list[int]:
    """prompt + answer with the tokenizer's special tokens; ended by EOS (trl appends it to every answer), or for
    an encoder with a separator but no EOS encoded as a text pair. `answer` "" gives the prompt alone."""
    eos = tokenizer.eos_token_id
    if eos is None and tokenizer.sep_token_id is not None:
        return list(tokenizer(prompt, answer or None)["input_ids"])
    ids = encode_text(tokenizer, prompt + answer, special_tokens=True)
    if answer and eos is not None and ids[-1:] != [eos]:
        ids.append(eos)
    return ids


def truncate_pair(
    n_prompt: int, chosen: list[int], rejected: list[int], max_length: int, keep_start: Sequence[int] = ()
) -> tuple[int, list[int], list[int]] | None:
    """The pair cut to max_length tokens per sequence: the prompt loses tokens from its left, so the answers, what
    is learnt, stay whole; the tokenizer's start tokens (`keep_start`, e.g. BOS or [CLS]) stay, as models expect
    them first. Only if the answers alone leave no room for the prompt's last token (the one that predicts the
    answer's first) are they cut at their end. None when max_length is too small to keep any answer token."""
    head = len(keep_start) if list(chosen[: len(keep_start)]) == list(keep_start) else 0
    head = min(head, max(n_prompt - 1, 0))  # a prompt that is only start tokens keeps at least one token of them
    answers = max(len(chosen), len(rejected)) - n_prompt
    keep = min(n_prompt, max(max_length - answers, min(n_prompt, head + 1)))
    room = max_length - keep
    if room < 1:
        return None
    prompt = chosen[:head] + chosen[n_prompt - (keep - head) : n_prompt]
    return keep, prompt + chosen[n_prompt:][:room], prompt + rejected[n_prompt:][:room]


def tokenize_pairs(
    pairs: Sequence[PreferencePair],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    overlong: str = "truncate",
    for_reward: bool = False,
    chat: bool = False,
) -> tuple[list[PairRow], TokenStats]:
    """Every pair as a row; over-long pairs (either sequence past max_length) are truncated (`truncate_pair`) or
    dropped, and counted: kept + dropped == examples. A pair whose two answers become identical when cut teaches
    nothing and is dropped too. `tokens` counts both sequences; `trained_tokens` the answer tokens of both
    (the labelled ones a causal model scores); `for_reward` marks rows a sequence classifier reads whole (same
    tokens: trl's RewardTrainer tokenizes prompt + answer exactly so)."""
    if overlong not in OVERLONG:
        raise ValueError(f"overlong must be one of {OVERLONG} for preference pairs, got {overlong!r}")
    prefix, _ = special_affixes(tokenizer)
    stats = TokenStats(examples=len(pairs))
    rows: list[PairRow] = []
    for pair in pairs:
        n, chosen, rejected = encode_pair(pair, tokenizer, chat=chat)
        length = max(len(chosen), len(rejected))
        stats.lengths.append(length)
        truncated = length > max_length
        if truncated:
            cut = None if overlong == "drop" else truncate_pair(n, chosen, rejected, max_length, prefix)
            if cut is None or cut[1] == cut[2]:
                stats.dropped += 1
                continue
            n, chosen, rejected = cut
        row = PairRow(chosen, _labels(chosen, n), rejected, _labels(rejected, n))
        rows.append(row)
        stats.kept += 1
        stats.truncated += int(truncated)
        stats.tokens += len(chosen) + len(rejected)
        stats.trained_tokens += len(chosen) + len(rejected) - 2 * n
    return rows, stats


def _labels(ids: list[int], n_prompt: int) -> list[int]:
    return [IGNORE] * n_prompt + ids[n_prompt:]


def collate_pairs(
    rows: Sequence[PairRow], pad_id: int, multiple: int | str = 1, cap: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-padded batch of the chosen sequences followed by the rejected ones (2 x pairs rows), so one forward
    pass scores both: input_ids, attention_mask, labels (IGNORE on prompts and padding), and ref_chosen_logps /
    ref_rejected_logps (pairs,) when the rows carry precomputed reference log-probs. Padded as `padded_width` says,
    never past `cap` (the longest row of the data: the batch holding it is the one that sets the peak memory)."""
    import torch  # here, not at the top: `lmtune data check` tokenizes pairs without loading torch

    seqs = [(r.chosen_ids, r.chosen_labels) for r in rows] + [(r.rejected_ids, r.rejected_labels) for r in rows]
    width = padded_width(max(len(ids) for ids, _ in seqs), multiple, cap)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(seqs):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        attention[i, : len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if rows[0].ref_chosen_logp is not None:
        batch["ref_chosen_logps"] = torch.tensor([r.ref_chosen_logp for r in rows], dtype=torch.float32)
        batch["ref_rejected_logps"] = torch.tensor([r.ref_rejected_logp for r in rows], dtype=torch.float32)
    return batch
