"""Shared fixtures: the preset's tokenizer and tiny Llama, a tiny GPT-2 saved as a local model, example builders.

Everything is built in memory or in a tmp dir from tiny configs; nothing is downloaded.
"""

from __future__ import annotations

import os

# Never reach for the hub from a test: a wrong name fails at once instead of retrying a network that isn't there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from support import chat_record, save_model_dir, write_jsonl
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from lmtune.config import ModelConfig
from lmtune.data.formats import ChatExample, Message, PromptCompletionExample
from lmtune.data.tokenize import tokenize_examples
from lmtune.data.types import Tokenized
from lmtune.model import load_model, load_tokenizer

PRESET = "preset:tiny-chat"

# The models here are tiny: one thread is fastest, and it keeps OpenMP from spinning against whatever else runs on
# the machine (two threads on two busy cores made a 2x7-token forward pass take 0.3 s instead of 3 ms).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change once set; tests run trainings
    of several precisions in one process (trl's trainers set bf16 where the CPU has it), while a real `lmtune`
    command is a process of its own."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerBase:
    """The shipped tokenizer of the preset (a fresh one per test: tests may change its chat template)."""
    return load_tokenizer(ModelConfig(name=PRESET))


@pytest.fixture
def tiny_model() -> PreTrainedModel:
    """The preset's 2-layer, 64-wide Llama, freshly built (methods change what is trainable)."""
    return load_model(ModelConfig(name=PRESET))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 (Conv1D layers, tied embeddings) saved with the preset tokenizer: a local-path model."""
    tok = load_tokenizer(ModelConfig(name=PRESET))
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        vocab_size=len(tok),
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return save_model_dir(GPT2LMHeadModel, config, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random T5 saved with the preset's tokenizer: an encoder-decoder model in a local directory."""
    tok = load_tokenizer(ModelConfig(name=PRESET))
    config = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    return save_model_dir(T5ForConditionalGeneration, config, tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture
def gpt2_model(gpt2_dir: Path) -> PreTrainedModel:
    return load_model(ModelConfig(name=str(gpt2_dir)))


@pytest.fixture
def chat() -> Callable[..., ChatExample]:
    """chat(("user", "hi"), ("assistant", "hello", 0), ...) -> ChatExample; a third item is the turn's weight."""

    def make(*turns: tuple, line: int = 1) -> ChatExample:
        return ChatExample(tuple(Message(*t) for t in turns), "test.jsonl", line)

    return make


@pytest.fixture
def prompt_completion() -> Callable[..., PromptCompletionExample]:
    def make(prompt: str, completion: str, line: int = 1) -> PromptCompletionExample:
        return PromptCompletionExample(prompt, completion, "test.jsonl", line)

    return make


@pytest.fixture
def chat_examples(chat: Callable[..., ChatExample]) -> list[ChatExample]:
    """Six conversations of clearly different lengths (a system turn in some, two assistant turns in one)."""
    out = []
    for i in range(6):
        turns: list[tuple] = [("system", "be brief")] if i % 2 else []
        turns += [("user", f"question {i} " + "more words " * i), ("assistant", f"answer {i} " + "and so on " * i)]
        if i == 4:
            turns += [("user", "and then?"), ("assistant", "then it ends")]
        out.append(chat(*turns, line=i + 1))
    return out


@pytest.fixture
def tokenized(chat_examples: Sequence[ChatExample], tokenizer: PreTrainedTokenizerBase) -> list[Tokenized]:
    toks, stats = tokenize_examples(chat_examples, tokenizer, max_length=256)
    assert stats.kept == len(chat_examples)
    return toks


@pytest.fixture
def chat_data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", [chat_record(i) for i in range(40)])
