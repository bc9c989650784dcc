"""`POST /v1/embeddings`: one vector per input, the mean of the model's last hidden states over the input's tokens
(the usual sentence embedding of an encoder; for a decoder, a plain pooled representation). A LoRA run's vectors
come from the base with its adapter."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from lmtune.serve.registry import Served

MAX_INPUTS = 256


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


@torch.no_grad()
def embed(served: Served, texts: list[str]) -> tuple[list[torch.Tensor], int]:
    """The vectors of `texts` and the number of tokens read."""
    backend = served.backend
    tok = backend.tokenizer
    limit = backend.max_length or backend.context
    enc = tok(texts, return_tensors="pt", padding=True, truncation=limit is not None, max_length=limit)
    with backend.lock:
        if served.adapter is not None:
            backend.model.set_adapter(served.adapter)
        out = backend.model(**enc.to(backend.device), output_hidden_states=True)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (out.hidden_states[-1].float() * mask).sum(1) / mask.sum(1).clamp(min=1)
    return list(pooled.cpu()), int(enc["attention_mask"].sum())


def embedding_data(vectors: list[torch.Tensor], encoding: str) -> list[dict[str, Any]]:
    def encode(v: torch.Tensor) -> Any:
        if encoding == "base64":  # little-endian float32, as OpenAI's clients decode it
            return base64.b64encode(v.numpy().astype("<f4").tobytes()).decode()
        return v.tolist()

    return [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]


def decode_base64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")
