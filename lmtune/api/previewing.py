"""`preview`: the first examples of a split as training renders them, trained and context segments apart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmtune.api.setup import task_of
from lmtune.config import ConfigLike, load_config
from lmtune.data.prepare import load_splits
from lmtune.data.tokenize import encode, render, setup_chat_template, special_affixes, trained_segments
from lmtune.data.types import IGNORE
from lmtune.errors import LmtuneError
from lmtune.tokenizer import load_tokenizer


@dataclass(frozen=True)
class PreviewItem:
    source: str
    line: int
    tokens: int
    trained: int
    segments: list[tuple[str, bool]]


def preview(
    config: ConfigLike, *, overrides: Sequence[str] = (), n: int = 3, split: str = "train"
) -> list[PreviewItem]:
    """The first n examples of a split as training renders them, split into trained and context segments."""
    cfg = load_config(config, overrides)
    task = task_of(cfg)
    if not task.renders_text:
        raise LmtuneError(
            f"data preview shows the rendered text and the answer tokens trained on; task {cfg.task} renders no "
            "prompt and answer (it trains a label per text or a tag per word)",
            hint="`lmtune data check CONFIG` shows the labels or tags, their counts and the token lengths",
        )
    tokenizer = load_tokenizer(cfg.model, light=True)
    setup_chat_template(tokenizer, cfg.data.chat_template)
    splits = load_splits(cfg.data, cfg.seed)
    examples = splits.train if split == "train" else splits.validation
    prefix, _ = special_affixes(tokenizer)
    items = []
    for ex in examples[:n]:
        tok = encode(render(ex, tokenizer, cfg.data.template), tokenizer, prefix)
        trained = sum(label != IGNORE for label in tok.labels[1:])
        segments = trained_segments(tok, tokenizer)
        items.append(PreviewItem(ex.source, ex.line, len(tok.input_ids), trained, segments))
    return items
