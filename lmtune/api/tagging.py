"""`lmtune eval` of a token-classification (NER) run: each word tagged by the argmax at its first sub-token,
scored by entity-level precision/recall/F1 (seqeval) with a table per entity type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmtune.api.heads import head_result, refuse_unknown_metrics, run_examples
from lmtune.data.conll import OUTSIDE, TokensExample
from lmtune.data.ner import ENTITY_METRICS, Window, align, entity_report, entity_scores, special_counts, windows
from lmtune.errors import LmtuneError
from lmtune.export import load_tuned

SAMPLES = 8


def tag_sentences(
    model: Any, tokenizer: Any, sentences: Sequence[Sequence[str]], *, max_length: int, batch_size: int = 16
) -> tuple[list[list[str]], int]:
    """The predicted tag of every word of every sentence, and how many sentences were longer than max_length.

    A long sentence is scored whole, in overlapping windows of max_length tokens (`lmtune.data.ner.windows`), each
    word predicted in the window that gives it the most context: no word is lost to truncation."""
    id2label = model.config.id2label
    specials = special_counts(tokenizer)
    rows: list[tuple[int, Window]] = []  # (sentence index, window), every window of every sentence
    long = 0
    for i, words in enumerate(sentences):
        ids, owners = align(words, tokenizer)
        parts = windows(ids, owners, max_length, *specials)
        long += len(ids) > max_length
        rows += [(i, w) for w in parts]
    out = [[OUTSIDE] * len(words) for words in sentences]
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(w.ids) for _, w in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (_, w) in enumerate(chunk):
                input_ids[row, : len(w.ids)] = torch.tensor(w.ids)
                mask[row, : len(w.ids)] = 1
            predicted = model(input_ids=input_ids, attention_mask=mask).logits.argmax(-1).tolist()
            for (i, w), guess in zip(chunk, predicted, strict=True):
                for word, tag in zip(w.words, guess, strict=False):
                    if word is not None:
                        out[i][word] = id2label[int(tag)]
    return out, long


def evaluate_tagger(
    run_dir: Path,
    data: str | None,
    metrics: Sequence[str],
    limit: int | None,
    batch_size: int,
    save: bool,
    start: float,
) -> Any:
    """A token-classification run scored on `data` (default: its validation split) in the run's shape."""
    refuse_unknown_metrics(metrics, ENTITY_METRICS, "token-classification",
                           "f1, precision and recall are entity-level (seqeval); accuracy is tag by tag")  # fmt: skip
    model, tokenizer, cfg = load_tuned(run_dir)
    examples, _, source = run_examples(cfg, data)
    sentences = [ex for ex in examples if isinstance(ex, TokensExample)][:limit]
    if not sentences:
        raise LmtuneError(f"{source}: no sentences of tokens and tags to evaluate")
    gold = [list(ex.tags) for ex in sentences]
    predicted, long = tag_sentences(
        model, tokenizer, [ex.tokens for ex in sentences], max_length=cfg.data.max_length, batch_size=batch_size
    )
    names = list(metrics) or list(ENTITY_METRICS)
    every = entity_scores(gold, predicted)
    scores: dict[str, Any] = {name: every[name] for name in names}
    scores["per_type"] = entity_report(gold, predicted)
    samples = [
        {"input": ex.text, "reference": [" ".join(ex.tags)], "outputs": {"tuned": " ".join(tags)}}
        for ex, tags in zip(sentences[:SAMPLES], predicted, strict=False)
    ]
    why = "as asked" if metrics else "token_classification: entity-level scores (seqeval) and tag accuracy"
    extra = {"longer_than_max_length": long, "words_cut": 0, "words": sum(len(ex.tokens) for ex in sentences)}
    return head_result(
        run_dir, source, len(sentences), why, {"tuned": scores}, samples, save=save, start=start, extra=extra
    )
