"""Tokenize a very long text in pieces, each cut checked to give the tokens of the whole text.

Why our own code: a fast (Rust) tokenizer slows down on one huge string. A 5 MB line took 4.4 s as one string
and 0.9 s cut into pieces of 8,000 characters encoded as one batch (the batch also uses every core, but the cut
alone made it 2.5x faster on one). Neither transformers nor tokenizers cut a long text for you, because a cut is
exact only where the tokenizer splits anyway: a cut inside a word or a special token changes the tokens.

So a cut falls before a space that follows a non-space and precedes a letter or digit, or after a newline before
one: where the GPT-2, Llama-3 and WordPiece splitters start a new word (SentencePiece at the space only). Each cut
is checked first: a window of text around it is encoded whole and as its two halves, which must give the same
ids. Both share the window's edges, so the only difference between them is the cut. A cut that changes the tokens
(a tokenizer that merges across spaces, or marks the first word of every piece) is not made; with none left, the
text is encoded whole.

Character offsets are read from a piece only when asked for (``Piece.offsets``): building a million offset
pairs costs about a quarter of a second, and most pieces of a long text are wholly trained or wholly not.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lmtune.errors import LmtuneError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

LONG = 32_000  # characters; a shorter text is encoded in one call, which is fast enough
PIECE = 8_000  # characters per piece: the speed-up grows as pieces shrink and flattens near here
WINDOW = 200  # characters each side of a seam, encoded whole and halved to check it


@dataclass(frozen=True)
class Piece:
    """The tokens of ``text[start:end]``, with the tokenizers ``Encoding`` their offsets are read from."""

    start: int
    end: int
    ids: list[int]
    encoding: Any  # tokenizers.Encoding with offsets; None when they were not kept (or a slow tokenizer)

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """Each token's (start, end) character offsets in the whole text, as an (n, 2) array (read once)."""
        if self.encoding is None:
            raise LmtuneError(
                "character offsets of this piece were not kept", hint="pass a position inside it in `edges`"
            )
        return np.asarray(self.encoding.offsets, dtype=np.int64).reshape(-1, 2) + self.start


def encode_pieces(tokenizer: PreTrainedTokenizerBase, text: str, edges: Sequence[int] = ()) -> list[Piece]:
    """``tokenizer(text, add_special_tokens=False)`` as consecutive pieces (one unless the text is long).

    A long text's pieces keep their offsets only where they hold one of ``edges`` (character positions: where a
    trained span starts or ends); the rest are encoded without them, which is 30% faster.
    """
    cuts = cut_points(text) if len(text) >= LONG and tokenizer.is_fast else []
    pieces = _checked_pieces(tokenizer, text, cuts, edges) if cuts else None
    if pieces is None:
        enc = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)
        pieces = [Piece(0, len(text), list(enc["input_ids"]), enc.encodings[0] if enc.encodings else None)]
    return pieces


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, *, special_tokens: bool = False) -> list[int]:
    """``tokenizer(text, add_special_tokens=special_tokens)["input_ids"]``, in pieces when the text is long (the
    special tokens then put around them, as the tokenizer puts them around any text)."""
    if len(text) < LONG:
        return list(tokenizer(text, add_special_tokens=special_tokens, verbose=False)["input_ids"])
    ids = list(itertools.chain.from_iterable(piece.ids for piece in encode_pieces(tokenizer, text)))
    if not special_tokens:
        return ids
    prefix, suffix = special_affixes(tokenizer)
    return [*prefix, *ids, *suffix]


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The token ids the tokenizer adds around raw text (e.g. Llama's BOS), found by asking it."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = full.index(bare[0]) if bare and bare[0] in full else 0
    return full[:start], full[start + len(bare) :]


# Where a cut may fall: before a space that ends a word and starts another, or after a newline that starts a word
# (code and logs have lines without spaces). Every cut is still checked; these are where the check passes.
_CUT = re.compile(r"(?<=\S) (?=[^\W_])|(?<=\n)(?=[^\W_])")


def cut_points(text: str, piece: int = PIECE) -> list[int]:
    """Where to cut: about every ``piece`` characters, at the first word boundary (``_CUT``) after that."""
    cuts: list[int] = []
    at = piece
    while at < len(text) - piece:
        found = _CUT.search(text, at, len(text) - piece)
        if found is None:
            break
        cuts.append(found.start())
        at = found.start() + piece
    return cuts


def _checked_pieces(
    tokenizer: PreTrainedTokenizerBase, text: str, cuts: Sequence[int], edges: Sequence[int] = ()
) -> list[Piece] | None:
    """The pieces between the cuts that keep the tokens around them, or None when no cut does."""
    checks = []
    for cut in cuts:
        left, right = max(0, cut - WINDOW), min(len(text), cut + WINDOW)
        checks += [text[left:right], text[left:cut], text[cut:right]]
    ids = tokenizer(checks, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    # A cut that changes the tokens is dropped (a SentencePiece tokenizer marks a piece's first word, which a
    # newline before it does not): the others were checked on their own, so they still hold.
    kept = [cut for k, cut in enumerate(cuts) if ids[3 * k] == ids[3 * k + 1] + ids[3 * k + 2]]
    if not kept:
        return None
    bounds = list(itertools.pairwise([0, *kept, len(text)]))
    texts = [text[a:b] for a, b in bounds]
    wanted = [i for i, (a, b) in enumerate(bounds) if any(a <= edge <= b for edge in edges)]
    rest = sorted(set(range(len(bounds))) - set(wanted))
    with_offsets = (
        tokenizer([texts[i] for i in wanted], add_special_tokens=False, verbose=False).encodings if wanted else []
    )
    # The wrapper's calls above left the Rust tokenizer with truncation and padding off (every call sets them);
    # its batch encoder without offsets then gives the same ids (tests compare them with one whole call).
    without = tokenizer.backend_tokenizer.encode_batch_fast([texts[i] for i in rest], add_special_tokens=False)
    found = {i: (e.ids, e) for i, e in zip(wanted, with_offsets, strict=True)}
    found.update({i: (e.ids, None) for i, e in zip(rest, without, strict=True)})
    return [Piece(a, b, *found[i]) for i, (a, b) in enumerate(bounds)]
