"""Long sentences are tagged and trained whole: overlapping windows over the sub-tokens, each word predicted (and
trained) exactly once, in the window where it has the most context."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from transformers import BertTokenizerFast

from lmtune.api.tagging import tag_sentences
from lmtune.data.conll import TokensExample
from lmtune.data.ner import align, entity_scores, special_counts, tokenize_tokens, windows
from lmtune.data.types import IGNORE

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "lives", "in", "paris", "##ville", "."]
TAGS = ["O", "B-LOC", "B-PER"]


@pytest.fixture(scope="module")
def wordpiece() -> BertTokenizerFast:
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)


class LookupTagger(torch.nn.Module):
    """A tagger whose answer depends on the token alone ('john' -> B-PER, 'paris' -> B-LOC, else O): any word it
    gets wrong was not seen by the model at all."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(id2label=dict(enumerate(TAGS)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        logits = torch.zeros(*input_ids.shape, len(TAGS))
        logits[..., 0] = 1.0
        logits[..., 2] += 2.0 * (input_ids == VOCAB.index("john"))
        logits[..., 1] += 2.0 * (input_ids == VOCAB.index("paris"))
        return SimpleNamespace(logits=logits)


def sentence(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = [rng.choice(["john", "lives", "in", "parisville", "."]) for _ in range(n)]
    tags = ["B-PER" if w == "john" else "B-LOC" if w == "parisville" else "O" for w in words]
    return words, tags


def test_a_300_word_sentence_is_scored_whole(wordpiece: BertTokenizerFast) -> None:
    words, gold = sentence(300)
    short_words, short_gold = sentence(7, seed=1)
    (predicted, predicted_short), long = tag_sentences(
        LookupTagger(), wordpiece, [words, short_words], max_length=32, batch_size=4
    )
    assert long == 1 and len(predicted) == 300
    assert predicted == gold and predicted_short == short_gold  # every word past the first window is tagged too
    assert entity_scores([gold], [predicted])["f1"] == 1.0


def test_windows_own_each_first_piece_once_with_context(wordpiece: BertTokenizerFast) -> None:
    words, _ = sentence(120, seed=2)
    ids, owners = align(words, wordpiece)
    parts = windows(ids, owners, 24, *special_counts(wordpiece))
    assert len(parts) > 5 and all(len(w.ids) <= 24 for w in parts)
    assert all(w.ids[0] == wordpiece.cls_token_id and w.ids[-1] == wordpiece.sep_token_id for w in parts)
    owned = sorted(word for w in parts for word in w.words if word is not None)
    assert owned == list(range(len(words)))  # every word once; '##ville' pieces never
    middle = parts[2]
    inner = [i for i, word in enumerate(middle.words) if word is not None]
    assert min(inner) > 2 and max(inner) < len(middle.ids) - 3  # the overlap's edges belong to the neighbours


def test_long_sentences_are_trained_whole_in_windows(wordpiece: BertTokenizerFast) -> None:
    words, tags = sentence(60, seed=3)
    ex = TokensExample(tuple(words), tuple(tags), "d", 1)
    rows, stats = tokenize_tokens([ex], wordpiece, TAGS, max_length=16, overlong="chunk")
    assert len(rows) > 3 and all(len(r.input_ids) <= 16 for r in rows)
    assert stats.chunked == 1 and stats.truncated == 0 and stats.trained_tokens == 60
    trained = [TAGS[label] for r in rows for label in r.labels if label != IGNORE]
    assert trained == tags  # in order, each word once
    _, cut = tokenize_tokens([ex], wordpiece, TAGS, max_length=16, overlong="truncate")
    assert cut.truncated == 1 and cut.trained_tokens < 60


def test_chunk_is_the_default_for_token_classification_only(tmp_path) -> None:
    from support import write_jsonl

    from lmtune.config import load_config
    from lmtune.errors import LmtuneError

    data = write_jsonl(tmp_path / "d.jsonl", [{"tokens": ["a"], "tags": ["O"]}])
    assert load_config({"task": "token_classification", "data": {"train": str(data)}}).data.overlong == "chunk"
    cut = load_config({"task": "token_classification", "data": {"train": str(data), "overlong": "truncate"}})
    assert cut.data.overlong == "truncate"
    with pytest.raises(LmtuneError, match="chunk"):
        load_config({"task": "classification", "data": {"train": str(data), "overlong": "chunk"}})


class CountingClassifier(torch.nn.Module):
    """Logit 1 is the share of 'paris' tokens in the input: 0 for a text cut before its only 'paris'."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        hits = ((input_ids == VOCAB.index("paris")) * attention_mask).sum(-1).float()
        return SimpleNamespace(logits=torch.stack([torch.full_like(hits, 0.01), hits], -1))


def test_classification_eval_reads_long_texts_whole(wordpiece: BertTokenizerFast) -> None:
    from lmtune.api.heads import classify_whole

    texts = [" ".join(["john"] * 100 + ["paris"]), "john lives in paris", "john lives"]
    logits, long = classify_whole(CountingClassifier(), wordpiece, texts, max_length=16, batch_size=3)
    assert long == 1 and logits.argmax(-1).tolist() == [1, 1, 0]  # truncation at 16 would miss the first 'paris'
