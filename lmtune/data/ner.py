"""Task token_classification: words aligned to sub-word tokens, tag ids on the first piece of each word, and the
entity-level scores (seqeval) that NER is reported with.

Alignment: the sentence is the words joined by single spaces, tokenized once with the tokenizer's own special
tokens and character offsets; a token belongs to the word its characters overlap. This is the tokenization the
model sees when it tags a plain sentence, and it works for every fast tokenizer: WordPiece (BERT, MiniLM), and
byte-level BPE or SentencePiece (GPT-2, Llama), whose `is_split_into_words` mode would otherwise tokenize each word
as if it started a text (without its leading space) unless the tokenizer was built with add_prefix_space=True.
The first token of a word carries the word's tag; its other tokens and the special tokens are IGNORE (the usual
Hugging Face recipe), so every word is one prediction.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

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

    A sentence past max_length is truncated (its last words are not trained) or dropped, and counted; a tag
    outside `tags` (the training set's) is a DataError at its line. `trained_tokens` counts the tagged words.
    """
    index = {name: i for i, name in enumerate(tags)}
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
        if truncated:
            ids, words = align(ex.tokens, tokenizer, max_length)
        labels = first_piece_labels(words, [index[t] for t in ex.tags])
        trained = sum(label != IGNORE for label in labels)
        if trained == 0:
            stats.dropped += 1  # no word left (max_length below the special tokens, or words the tokenizer drops)
            continue
        stats.truncated += int(truncated)
        stats.kept += 1
        stats.tokens += len(ids)
        stats.trained_tokens += trained
        out.append(Tokenized(ids, labels))
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
