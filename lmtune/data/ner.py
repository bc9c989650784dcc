"""Task token_classification: words aligned to sub-word tokens, tag ids on the first piece of each word, and the
entity-level scores (seqeval) that NER is reported with.

Alignment: the sentence is the words joined by single spaces, tokenized once with the tokenizer's own special
tokens and character offsets; a token belongs to the word its characters overlap. This is the tokenization the
model sees when it tags a plain sentence, and it works for every fast tokenizer: WordPiece (BERT, MiniLM), and
byte-level BPE or SentencePiece (GPT-2, Llama), whose `is_split_into_words` mode would otherwise tokenize each word
as if it started a text (without its leading space) unless the tokenizer was built with add_prefix_space=True.
The first token of a word carries the word's tag; its other tokens and the special tokens are IGNORE (the usual
Hugging Face recipe), so every word is one prediction.

Sentences longer than max_length are never cut: `windows` covers the sentence with overlapping windows of at most
max_length tokens (the Hugging Face token-classification pipeline's stride), and each word is predicted (and, with
`data.overlong: chunk`, the default for this task, trained) in the window where its first token has the most
context on both sides, so every word counts exactly once.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from lmtune.data.conll import OUTSIDE, TokensExample, token_line
from lmtune.data.quality import Finding
from lmtune.data.types import IGNORE, Tokenized, TokenStats
from lmtune.errors import DataError, LmtuneError

# The scores `lmtune eval` and the validation pass report for a token-classification run.
ENTITY_METRICS = ("f1", "precision", "recall", "accuracy")


def tag_names(examples: Sequence[Any]) -> list[str]:
    """The tag set read from the training examples: 'O' first, then by entity type and prefix (B-LOC, I-LOC,
    B-ORG, ...), so the same data always gives the same tag ids."""
    names = {tag for ex in examples if isinstance(ex, TokensExample) for tag in ex.tags}
    return sorted(names, key=tag_names_key)


def align(
    tokens: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int | None = None
) -> tuple[list[int], list[int | None]]:
    """Token ids of the sentence (with the tokenizer's special tokens, cut to max_length when given) and, for
    each, the index of the word it belongs to (None: a special token or whitespace)."""
    starts, ends, pos = [], [], 0
    for word in tokens:
        starts.append(pos)
        ends.append(pos + len(word))
        pos += len(word) + 1
    enc = tokenizer(
        " ".join(tokens),
        add_special_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        truncation=max_length is not None,
        max_length=max_length,
    )
    words: list[int | None] = []
    for (start, end), special in zip(enc["offset_mapping"], enc["special_tokens_mask"], strict=True):
        j = bisect.bisect_right(ends, start)  # the first word ending after the token starts
        words.append(j if not special and end > start and j < len(tokens) and starts[j] < end else None)
    return list(enc["input_ids"]), words


@dataclass(frozen=True)
class Window:
    """One model input over part of a sentence: token ids with the special tokens around them, and for each the
    word whose prediction this window owns (None elsewhere: special tokens, overlap owned by a neighbour)."""

    ids: list[int]
    words: list[int | None]


def windows(
    ids: Sequence[int], words: Sequence[int | None], max_length: int, n_prefix: int, n_suffix: int
) -> list[Window]:
    """A sentence's tokens (as `align` gives them, special tokens included) as windows of at most max_length
    tokens, overlapping by a quarter of a window; each word's first token belongs to the window where it is
    furthest from an edge (the most context on both sides). One window when the sentence fits."""
    # Only a word's first token is predicted: its other tokens, in whichever window, are never a word's.
    seen: set[int | None] = {None}
    firsts: list[int | None] = []
    for w in words:
        firsts.append(None if w in seen else w)
        seen.add(w)
    if len(ids) <= max_length:
        return [Window(list(ids), firsts)]
    head, tail = list(ids[:n_prefix]), list(ids[len(ids) - n_suffix :])
    body, body_words = ids[n_prefix : len(ids) - n_suffix], firsts[n_prefix : len(ids) - n_suffix]
    room = max_length - n_prefix - n_suffix
    if room < 2:
        raise LmtuneError(f"data.max_length {max_length} leaves no room for words between the special tokens")
    starts = window_starts(len(body), room)

    owners = _owners(starts, room, len(body))
    out = []
    for k, s in enumerate(starts):
        part = range(s, min(s + room, len(body)))
        mine = [body_words[p] if owners[p] == k else None for p in part]
        out.append(Window([*head, *(body[p] for p in part), *tail], [None] * n_prefix + mine + [None] * n_suffix))
    return out


def _owners(starts: Sequence[int], room: int, length: int) -> list[int]:
    """For each position, the window holding it whose nearer edge is furthest away (the first such on a tie).

    Vectorised over the positions: a position lies in at most three windows, which start in (p - room, p], so
    each round compares one more candidate for every position at once. One token at a time, scanning the
    windows, a sentence of 40,000 words took 12 s.
    """
    first = np.asarray(starts, dtype=np.int64)
    p = np.arange(length)
    best = np.searchsorted(first, p - room, side="right")  # the first window that holds p
    last = np.searchsorted(first, p, side="right") - 1

    def margin(k: np.ndarray) -> np.ndarray:
        return np.minimum(p - first[k], first[k] + room - 1 - p)

    score, k = margin(best), best + 1
    while (k <= last).any():
        candidate = np.minimum(k, last)
        better = (k <= last) & (margin(candidate) > score)
        best, score, k = np.where(better, k, best), np.where(better, margin(candidate), score), k + 1
    return best.tolist()


def window_starts(length: int, room: int) -> list[int]:
    """Where windows of `room` tokens start to cover `length` tokens, each sharing a quarter with the next (the
    stride of the Hugging Face pipelines), the last one flush with the end."""
    step = max(1, room - room // 4)
    starts = list(range(0, max(length - room, 0) + 1, step))
    if starts[-1] + room < length:
        starts.append(length - room)
    return starts


def special_counts(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text ([CLS] ... [SEP]: 1 and 1)."""
    mask = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)["special_tokens_mask"]
    n_prefix = next((i for i, m in enumerate(mask) if not m), len(mask))
    n_suffix = next((i for i, m in enumerate(reversed(mask)) if not m), 0)
    return n_prefix, n_suffix


def first_piece_labels(words: Sequence[int | None], tag_ids: Sequence[int]) -> list[int]:
    """The tag id of each word on its first token; IGNORE on the word's other tokens and on special tokens."""
    labels, seen = [], set()
    for w in words:
        labels.append(IGNORE if w is None or w in seen else tag_ids[w])
        if w is not None:
            seen.add(w)
    return labels


def tokenize_tokens(
    examples: Sequence[Any],
    tokenizer: PreTrainedTokenizerBase,
    tags: Sequence[str],
    *,
    max_length: int,
    overlong: str = "truncate",
) -> tuple[list[Tokenized], TokenStats]:
    """Task token_classification: each sentence's token ids with tag ids on the first piece of every word.

    A sentence past max_length is cut into overlapping windows whose words are each trained once (chunk, the
    task's default), truncated (its last words are not trained) or dropped, and counted; a tag outside `tags` (the
    training set's) is a DataError at its line. `trained_tokens` counts the tagged words.
    """
    index = {name: i for i, name in enumerate(tags)}
    specials = special_counts(tokenizer)
    stats = TokenStats(examples=len(examples))
    out = []
    for ex in examples:
        if not isinstance(ex, TokensExample):
            raise LmtuneError(
                f"{ex.source}:{ex.line}: task token_classification needs sentences of tokens and tags",
                hint="use a CoNLL file (.conll: a token and its tag per line) or records with tokens and tags lists",
            )
        for i, tag in enumerate(ex.tags):
            if tag not in index:
                raise DataError(
                    ex.source,
                    token_line(ex, i),
                    f"tags[{i}]",
                    f"unknown tag {tag!r}: the training data has the tags {', '.join(tags)}",
                    hint="fix the tag, or add sentences with it to the training data",
                )
        ids, words = align(ex.tokens, tokenizer)
        stats.lengths.append(len(ids))
        truncated = len(ids) > max_length
        if truncated and overlong == "drop":
            stats.dropped += 1
            continue
        if truncated and overlong == "chunk":
            parts = windows(ids, words, max_length, *specials)
        elif truncated:
            parts = [Window(*align(ex.tokens, tokenizer, max_length))]
        else:
            parts = [Window(ids, words)]
        tag_ids = [index[t] for t in ex.tags]
        rows = [Tokenized(w.ids, first_piece_labels(w.words, tag_ids)) for w in parts]
        rows = [row for row in rows if any(label != IGNORE for label in row.labels)]
        if not rows:
            stats.dropped += 1  # no word left (max_length below the special tokens, or words the tokenizer drops)
            continue
        if truncated and overlong == "chunk":
            stats.chunked += 1
        else:
            stats.truncated += int(truncated)
        stats.kept += 1
        for row in rows:
            stats.tokens += len(row.input_ids)
            stats.trained_tokens += sum(label != IGNORE for label in row.labels)
        out.extend(rows)
    return out, stats


def word_tags(words: Sequence[int | None], predicted: Sequence[int], n_words: int, id2label: Mapping) -> list[str]:
    """The predicted tag of every word: the argmax at its first token; 'O' for a word with no token (cut off by
    max_length), which is what an untagged word is."""
    out = [OUTSIDE] * n_words
    seen: set[int] = set()
    for w, p in zip(words, predicted, strict=True):
        if w is not None and w not in seen:
            out[w] = id2label[int(p)]
            seen.add(w)
    return out


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval, micro average over entities, conlleval's default mode: an
    entity counts only when its type and both boundaries match) and the token accuracy (tag by tag)."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
    if not gold:
        return {}
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(gold, predicted)),
    }


def entity_report(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, dict[str, Any]]:
    """Per entity type: precision, recall, F1 and support (gold entities), seqeval's classification_report."""
    from seqeval.metrics import classification_report

    raw = classification_report(
        [list(s) for s in gold], [list(s) for s in predicted], output_dict=True, zero_division=0
    )
    return {
        str(kind): {
            "precision": float(v["precision"]),
            "recall": float(v["recall"]),
            "f1": float(v["f1-score"]),
            "support": int(v["support"]),
        }
        for kind, v in raw.items()
        if " avg" not in str(kind)
    }


def tag_sequences(labels: Sequence[Sequence[int]], predicted: Sequence[Sequence[int]], id2label: Mapping) -> tuple:
    """(gold, predicted) tag-name sequences of the labelled positions of each row (what the validation pass
    scores): labels are tag ids with IGNORE elsewhere, predicted the argmax ids at the same positions."""
    gold_seqs, pred_seqs = [], []
    for row, guess in zip(labels, predicted, strict=True):
        keep = [i for i, label in enumerate(row) if label != IGNORE]
        if keep:
            gold_seqs.append([id2label[int(row[i])] for i in keep])
            pred_seqs.append([id2label[int(guess[i])] for i in keep])
    return gold_seqs, pred_seqs


def tag_findings(examples: Sequence[Any], split: str) -> tuple[dict[str, int], list[Any]]:
    """`lmtune data check` on tagged sentences: how often each tag occurs, and what a person should look at: a tag
    seen once (too rare to learn), and I-X tags that open an entity (IOB1 style; seqeval reads them, but data that
    mixes IOB1 and IOB2 teaches the model two conventions)."""
    counts: Counter[str] = Counter()
    findings = []
    for ex in examples:
        if not isinstance(ex, TokensExample):
            continue
        counts.update(ex.tags)
        previous = OUTSIDE
        for i, tag in enumerate(ex.tags):
            prefix, _, kind = tag.partition("-")
            if prefix == "I" and previous.partition("-")[2] != kind:
                message = f"{tag} opens an entity after {previous} (IOB1 style); IOB2 starts every entity with B-"
                findings.append(Finding("info", "tags", message, split, ex.source, token_line(ex, i), f"tags[{i}]"))
                break
            previous = tag
    for tag, n in sorted(counts.items()):
        if n < 2 and tag != OUTSIDE:
            message = f"tag {tag!r} occurs once: too rare to learn"
            findings.append(Finding("warning", "tags", message, split, examples[0].source, None, "tags"))
    return dict(sorted(counts.items(), key=lambda kv: tag_names_key(kv[0]))), findings


def tag_names_key(tag: str) -> tuple[bool, str, str]:
    """The order of `tag_names`: 'O' first, then by entity type and prefix."""
    return tag != OUTSIDE, tag.partition("-")[2], tag.partition("-")[0]
