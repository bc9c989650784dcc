"""Launches whose states lmtune cannot save exactly are refused before any work, with the way out."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from lmtune.config import load_config
from lmtune.errors import LmtuneError
from lmtune.launch import check_launch


def launch(kind: DistributedType, fsdp_version: int | None = None) -> SimpleNamespace:
    """What check_launch reads of an Accelerator (accelerate sets FSDP and DeepSpeed up on GPUs only)."""
    plugin = SimpleNamespace(fsdp_version=fsdp_version) if fsdp_version else None
    return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(fsdp_plugin=plugin))


def config(*overrides: str):
    return load_config({"data": {"train": "x.jsonl"}, "method": "lora"}, list(overrides))


@pytest.mark.parametrize(
    ("kind", "version"),
    [
        (DistributedType.NO, None),
        (DistributedType.MULTI_CPU, None),
        (DistributedType.MULTI_GPU, None),
        (DistributedType.FSDP, 2),
    ],
)
def test_single_device_ddp_and_fsdp2_launches_pass(kind: DistributedType, version: int | None) -> None:
    check_launch(launch(kind, version), config())
    check_launch(launch(kind, version), config("method.name=full"))


@pytest.mark.parametrize(
    ("kind", "version", "overrides", "message", "hint"),
    [
        (DistributedType.DEEPSPEED, None, (), "DeepSpeed", "fsdp-8gpu.yaml"),
        (DistributedType.FSDP, 1, (), "FSDP version 1", "fsdp_version: 2"),
        (DistributedType.FSDP, 2, ("train.l2sp=0.01",), "train.l2sp with FSDP", "train.l2sp: 0"),
        (DistributedType.FSDP, 2, ("method.name=qlora",), "method qlora with FSDP", "method lora"),
    ],
)
def test_unsupported_launches_are_refused_with_the_way_out(kind, version, overrides, message, hint) -> None:
    with pytest.raises(LmtuneError) as info:
        check_launch(launch(kind, version), config(*overrides))
    assert message in str(info.value) and hint in info.value.hint
    # The same settings without the launch are fine.
    check_launch(launch(DistributedType.NO), config(*overrides))
