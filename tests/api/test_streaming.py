"""A run trained from a stream (data.streaming): killed and resumed, it equals the uninterrupted run, across the
end of a pass over the stream too."""

from __future__ import annotations

import json

import pytest
import torch
from support import crash_at, final_weights, make_config, read_metrics, train_losses, write_jsonl

from lmtune.api import finetune


@pytest.mark.parametrize(("packing", "crash"), [(False, 9), (True, 3)])
def test_a_streamed_run_resumes_exactly(tmp_path, packing, crash):
    rows = [{"text": f"Note {i}: the {'red' if i % 2 else 'blue'} box holds {i % 7} stones."} for i in range(30)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", rows[:4])
    data = {"validation": str(val), "streaming": True, "shuffle_buffer": 8, "packing": packing, "format": "text"}
    cfg = make_config(train, data=data, train={"max_steps": 10, "save_every": 2})
    cfg["task"] = "causal_lm"
    straight = tmp_path / "straight"
    finetune(cfg, output_dir=str(straight))
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, output_dir=str(crashed), after_step=[crash_at(crash)])
    finetune(cfg, output_dir=str(crashed), resume=True)

    a, b = train_losses(straight), train_losses(crashed)
    assert sorted(b) == list(range(1, 11)) and all(b[s] == pytest.approx(a[s], rel=1e-6) for s in a)
    epochs = [r["epoch"] for r in read_metrics(straight) if r["split"] == "train"]
    if not packing:  # 30 rows of batch 4: 8 steps in the first pass (the last one of 2 rows), 2 in the second
        assert epochs[7] == 0 and epochs[8] == 1
    wa, wb = final_weights(straight), final_weights(crashed)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=0, msg=name)
    info = json.loads((straight / "data.json").read_text())["splits"]["train"]
    assert info["streaming"] is True and info["bytes"] == train.stat().st_size
