"""`lmtune eval` of a token-classification (NER) run: each word tagged by the argmax at its first sub-token,
scored by entity-level precision/recall/F1 (seqeval) with a table per entity type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmtune.api.heads import head_result, run_examples
from lmtune.data.conll import TokensExample
from lmtune.data.ner import ENTITY_METRICS, align, entity_report, entity_scores, word_tags
from lmtune.errors import LmtuneError
from lmtune.export import load_tuned

SAMPLES = 8


def tag_sentences(
    model: Any, tokenizer: Any, sentences: Sequence[Sequence[str]], *, max_length: int, batch_size: int = 16
) -> list[list[str]]:
    """The predicted tag of every word of every sentence (words cut off by max_length are tagged 'O')."""
    id2label = model.config.id2label
    out: list[list[str]] = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            chunk = sentences[i : i + batch_size]
            aligned = [align(words, tokenizer, max_length) for words in chunk]
            width = max(len(ids) for ids, _ in aligned)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (ids, _) in enumerate(aligned):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            predicted = model(input_ids=input_ids, attention_mask=mask).logits.argmax(-1).tolist()
            for (ids, words), guess, sentence in zip(aligned, predicted, chunk, strict=True):
                out.append(word_tags(words, guess[: len(ids)], len(sentence), id2label))
    return out


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
    unknown = [m for m in metrics if m not in ENTITY_METRICS]
    if unknown:
        raise LmtuneError(
            f"metrics {', '.join(unknown)}: a token-classification run is scored by {', '.join(ENTITY_METRICS)}",
            hint="f1, precision and recall are entity-level (seqeval); accuracy is tag by tag",
        )
    model, tokenizer, cfg = load_tuned(run_dir)
    examples, _, source = run_examples(cfg, data)
    sentences = [ex for ex in examples if isinstance(ex, TokensExample)][:limit]
    if not sentences:
        raise LmtuneError(f"{source}: no sentences of tokens and tags to evaluate")
    gold = [list(ex.tags) for ex in sentences]
    predicted = tag_sentences(
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
    return head_result(run_dir, source, len(sentences), why, {"tuned": scores}, samples, save=save, start=start)
