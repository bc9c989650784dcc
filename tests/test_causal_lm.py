"""task causal_lm: domain adaptation on raw text — every token trained, long documents chunked, rows packed."""

import json
from pathlib import Path

import pytest
from support import write_jsonl

from lmtune.api import finetune
from lmtune.config import load_config
from lmtune.data.formats import TextExample
from lmtune.data.tokenize import chunk, tokenize_examples
from lmtune.data.types import IGNORE
from lmtune.errors import LmtuneError

DOC = "The lighthouse keeper climbed the stairs every evening and lit the great lamp for the ships. " * 12


def test_chunking_keeps_every_token_of_a_long_document(tokenizer) -> None:
    long_doc = TextExample(DOC, "d.jsonl", 1)
    (whole,), _ = tokenize_examples([long_doc], tokenizer, max_length=10_000)
    pieces, stats = tokenize_examples([long_doc], tokenizer, max_length=64, overlong="chunk")
    assert stats.chunked == 1 and stats.truncated == 0 and stats.dropped == 0
    assert all(len(p.input_ids) <= 64 for p in pieces) and len(pieces) == -(-len(whole.input_ids) // 64)
    assert [t for p in pieces for t in p.input_ids] == whole.input_ids  # nothing lost, nothing reordered
    assert all(label != IGNORE for p in pieces for label in p.labels)
    assert chunk(whole, 10_000) == [whole]


def test_chunk_is_for_raw_text_only(tmp_path: Path, prompt_completion, tokenizer) -> None:
    with pytest.raises(LmtuneError, match="raw text only"):
        tokenize_examples([prompt_completion("q " * 100, "a")], tokenizer, max_length=16, overlong="chunk")
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(LmtuneError, match="causal_lm trains on raw text"):
        load_config({"task": "causal_lm", "data": {"train": str(data), "format": "prompt_completion"}})


def test_causal_lm_defaults_chunk_and_pack(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    cfg = load_config({"task": "causal_lm", "data": {"train": str(data)}})
    assert (cfg.data.overlong, cfg.data.packing, cfg.data.format) == ("chunk", True, "text")
    assert load_config({"task": "causal_lm", "data": {"train": str(data), "packing": False}}).data.packing is False


def test_domain_adaptation_run_lowers_perplexity(tmp_path: Path) -> None:
    docs = [{"text": DOC.replace("lighthouse", f"lighthouse {i}")} for i in range(12)]
    train = write_jsonl(tmp_path / "train.jsonl", docs)
    cfg = {
        "task": "causal_lm",
        "data": {"train": str(train), "val_fraction": 0.25, "max_length": 64},
        "method": "full",
        "train": {"max_steps": 12, "batch_size": 4, "lr": 3e-3, "mixed_precision": "no", "eval_every": 6},
        "forgetting": {"measure": False},
    }
    result = finetune(cfg, output_dir=str(tmp_path / "run"))
    s = result.summary
    assert s["val_perplexity_after"] < s["val_perplexity_before"] / 2
    data = json.loads((result.run_dir / "data.json").read_text())
    assert data["splits"]["train"]["tokens"]["chunked"] == 9 and data["splits"]["train"]["tokens"]["truncated"] == 0
