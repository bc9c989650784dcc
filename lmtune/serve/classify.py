"""`POST /v1/classify` (lmtune's own endpoint; OpenAI has none): the labels a classification run's head predicts.

Request: {"model": NAME, "input": TEXT or [TEXT, ...]}. Answer: {"object": "list", "model": NAME, "data": [...]}:
for a classification run, per input {"index", "label", "scores": {label: probability}}; for a token-classification
(NER) run, per input {"index", "words": [{"word", "label"}]} over the input's whitespace-separated words, each
labelled by the head's argmax at its first sub-token, as `lmtune eval` scores it."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from lmtune.data.conll import OUTSIDE
from lmtune.data.ner import align, special_counts, windows
from lmtune.serve.registry import Backend

MAX_INPUTS = 256


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] = Field(min_length=1)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


@torch.no_grad()
def classify(backend: Backend, texts: list[str]) -> list[dict[str, Any]]:
    with backend.lock:
        if backend.kind == "token_classifier":
            return _tag(backend, texts)
        return _label(backend, texts)


def _label(backend: Backend, texts: list[str]) -> list[dict[str, Any]]:
    model, tok = backend.model, backend.tokenizer
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=backend.max_length)
    probs = model(**enc.to(backend.device)).logits.float().softmax(-1).tolist()
    id2label = _id2label(model)
    out = []
    for i, row in enumerate(probs):
        best = max(range(len(row)), key=row.__getitem__)
        scores = {id2label[j]: round(p, 6) for j, p in enumerate(row)}
        out.append({"index": i, "label": id2label[best], "scores": scores})
    return out


def _tag(backend: Backend, texts: list[str]) -> list[dict[str, Any]]:
    model, tok = backend.model, backend.tokenizer
    id2label = _id2label(model)
    out = []
    for i, text in enumerate(texts):
        words = text.split()
        tags = [OUTSIDE] * len(words)
        # A text longer than max_length is tagged whole, window by window (as `lmtune eval` scores it).
        for window in windows(*align(words, tok), backend.max_length, *special_counts(tok)):
            input_ids = torch.tensor([window.ids], device=backend.device)
            guess = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits.argmax(-1)[0]
            for w, tag in zip(window.words, guess.tolist(), strict=True):
                if w is not None:
                    tags[w] = id2label[int(tag)]
        out.append({"index": i, "words": [{"word": w, "label": t} for w, t in zip(words, tags, strict=True)]})
    return out


def _id2label(model: Any) -> dict[int, str]:
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    return {int(k): v for k, v in config.id2label.items()}
