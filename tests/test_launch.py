"""Launches whose states lmtune cannot save exactly are refused before any work, with the way out."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from lmtune.config import load_config
from lmtune.errors import LmtuneError
from lmtune.train.launch import check_launch


def launch(kind: DistributedType, fsdp_version: int | None = None, deepspeed: dict | None = None) -> SimpleNamespace:
    """What check_launch reads of an Accelerator (accelerate sets FSDP and DeepSpeed up on GPUs only)."""
    plugin = SimpleNamespace(fsdp_version=fsdp_version) if fsdp_version else None
    ds = SimpleNamespace(deepspeed_config=deepspeed if deepspeed is not None else {"zero_optimization": {"stage": 3}})
    return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(fsdp_plugin=plugin, deepspeed_plugin=ds))


def config(*overrides: str):
    return load_config({"data": {"train": "x.jsonl"}, "method": "lora"}, list(overrides))


@pytest.mark.parametrize(
    ("kind", "version"),
    [
        (DistributedType.NO, None),
        (DistributedType.MULTI_CPU, None),
        (DistributedType.MULTI_GPU, None),
        (DistributedType.FSDP, 2),
        (DistributedType.DEEPSPEED, None),
    ],
)
def test_single_device_ddp_fsdp2_and_zero_launches_pass(kind: DistributedType, version: int | None) -> None:
    check_launch(launch(kind, version), config())
    check_launch(launch(kind, version), config("method.name=full"))


@pytest.mark.parametrize(
    ("kind", "version", "overrides", "message", "hint"),
    [
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


ZERO2 = {"zero_optimization": {"stage": 2}}


@pytest.mark.parametrize(
    ("deepspeed", "overrides", "message", "hint"),
    [
        ({"zero_optimization": {"stage": 0}}, (), "ZeRO stage 0", "--nproc N"),
        ({}, (), "ZeRO stage 0", "zero_stage"),
        ({**ZERO2, "optimizer": {"type": "AdamW"}}, (), "also defines optimizer", "remove the optimizer"),
        ({**ZERO2, "scheduler": {"type": "WarmupLR"}}, (), "also defines scheduler", "remove the scheduler"),
        ({**ZERO2, "fp16": {"enabled": True}}, (), "DeepSpeed with fp16", "bf16"),
        (ZERO2, ("train.mixed_precision=fp16",), "DeepSpeed with fp16", "bf16"),
        (ZERO2, ("train.l2sp=0.01",), "train.l2sp with DeepSpeed", "train.l2sp: 0"),
        (ZERO2, ("method.name=qlora",), "method qlora with DeepSpeed", "method lora"),
    ],
)
def test_deepspeed_settings_lmtune_cannot_drive_are_refused(deepspeed, overrides, message, hint) -> None:
    with pytest.raises(LmtuneError) as info:
        check_launch(launch(DistributedType.DEEPSPEED, deepspeed=deepspeed), config(*overrides))
    assert message in str(info.value) and hint in info.value.hint
    check_launch(launch(DistributedType.NO), config(*overrides))
