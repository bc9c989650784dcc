"""Tokenize a very long text in pieces, checking at every seam that the pieces give the tokens of the whole.

Why our own code: a fast (Rust) tokenizer slows down on one huge string. A 5 MB line took 4.4 s as one string
and 0.9 s cut into pieces of 8,000 characters encoded as one batch (the batch also uses every core, but the cut
alone made it 2.5x faster on one). Neither transformers nor tokenizers cut a long text for you, because a cut is
exact only where the tokenizer splits anyway: a cut inside a word or a special token changes the tokens.

So pieces are cut before a space that follows a non-space and precedes a letter or digit (where the GPT-2,
Llama-3, WordPiece and SentencePiece splitters all start a new word), and every seam is checked: a window of
text around it is encoded whole and as its two halves, which must give the same ids. Both encodings share the
window's edges, so the only difference between them is the cut. A seam that changes the tokens (a tokenizer that
merges across spaces, or adds a marker to every piece) sends the text back to one whole encoding.

Character offsets are read from a piece only when asked for (``Piece.offsets``): building a million offset
pairs costs about a quarter of a second, and most pieces of a long text are wholly trained or wholly not.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lmtune.errors import LmtuneError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

LONG = 32_000  # characters; a shorter text is encoded in one call, which is fast enough
PIECE = 8_000  # characters per piece: the speed-up grows as pieces shrink and flattens near here
WINDOW = 400  # characters each side of a seam, encoded whole and halved to check it


@dataclass(frozen=True)
class Piece:
    """The tokens of ``text[start:end]``, with the tokenizers ``Encoding`` their offsets are read from."""

    start: int
    end: int
    ids: list[int]
    encoding: Any  # tokenizers.Encoding; None from a slow tokenizer

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """Each token's (start, end) character offsets in the whole text, as an (n, 2) array (read once)."""
        if self.encoding is None:
            raise LmtuneError("character offsets need a fast tokenizer", hint="install `tokenizers` or convert it")
        return np.asarray(self.encoding.offsets, dtype=np.int64).reshape(-1, 2) + self.start


def encode_pieces(tokenizer: PreTrainedTokenizerBase, text: str) -> list[Piece]:
    """``tokenizer(text, add_special_tokens=False)`` as consecutive pieces (one unless the text is long)."""
    cuts = cut_points(text) if len(text) >= LONG and tokenizer.is_fast else []
    pieces = _checked_pieces(tokenizer, text, cuts) if cuts else None
    if pieces is None:
        enc = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)
        pieces = [Piece(0, len(text), list(enc["input_ids"]), enc.encodings[0] if enc.encodings else None)]
    return pieces


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``tokenizer(text, add_special_tokens=False)["input_ids"]``, in pieces when the text is long."""
    return [i for piece in encode_pieces(tokenizer, text) for i in piece.ids]


def cut_points(text: str, piece: int = PIECE) -> list[int]:
    """Where to cut: about every ``piece`` characters, just before a space between a word's end and a word."""
    cuts: list[int] = []
    at = piece
    while at < len(text) - piece:
        space = text.find(" ", at)
        if space < 0 or space >= len(text) - piece:
            break
        if space > 0 and not text[space - 1].isspace() and text[space + 1].isalnum():
            cuts.append(space)
            at = space + piece
        else:
            at = space + 1
    return cuts


def _checked_pieces(tokenizer: PreTrainedTokenizerBase, text: str, cuts: Sequence[int]) -> list[Piece] | None:
    """The pieces between the cuts, or None when a cut changes the tokens around it."""
    bounds = [0, *cuts, len(text)]
    checks = []
    for cut in cuts:
        left, right = max(0, cut - WINDOW), min(len(text), cut + WINDOW)
        checks += [text[left:right], text[left:cut], text[cut:right]]
    texts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    enc = tokenizer(texts + checks, add_special_tokens=False, return_attention_mask=False, verbose=False)
    ids = enc["input_ids"]
    for k in range(len(texts), len(ids), 3):
        if ids[k] != ids[k + 1] + ids[k + 2]:
            return None
    return [Piece(a, b, ids[i], enc.encodings[i]) for i, (a, b) in enumerate(itertools.pairwise(bounds))]
