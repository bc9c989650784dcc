"""What a distributed launch (accelerate config / torchrun) may combine with a run's settings, checked up front."""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import DistributedType

from lmtune.config import RunConfig
from lmtune.errors import LmtuneError

FSDP_CONFIG = "configs/accelerate/fsdp-8gpu.yaml"


def check_launch(accelerator: Accelerator, cfg: RunConfig) -> None:
    """Refuse, before any work, the launches whose states lmtune cannot save and load exactly.

    DDP and FSDP2 are supported (`lmtune.checkpoint` gathers FSDP2 shards through torch.distributed.checkpoint).
    FSDP1 wraps modules in a way whose names and flat parameters that code does not read. DeepSpeed keeps its
    partitions inside its engine, reachable only through DeepSpeed's own checkpoint format.
    """
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        raise LmtuneError(
            "DeepSpeed: lmtune's checkpoints and final save do not read DeepSpeed's partitioned states",
            hint=f"for ZeRO-3-style sharding launch FSDP2 ({FSDP_CONFIG}); for data parallel, --nproc N (DDP)",
        )
    if kind != DistributedType.FSDP:
        return
    version = getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1)
    if version != 2:
        raise LmtuneError(
            f"FSDP version {version}: lmtune saves and resumes sharded runs with FSDP2 only",
            hint=f"set fsdp_version: 2 in the accelerate config's fsdp_config (as {FSDP_CONFIG} does)",
        )
    if cfg.train.l2sp > 0:
        raise LmtuneError(
            "train.l2sp with FSDP: the L2-SP penalty compares whole weights with their starting values, which FSDP "
            "holds only as shards",
            hint="set train.l2sp: 0 (or train with DDP: --nproc N)",
        )
    if cfg.method.name == "qlora":
        raise LmtuneError(
            "method qlora with FSDP: FSDP cannot shard bitsandbytes 4-bit weights stored as uint8",
            hint="use method lora under FSDP, or qlora on one GPU / with DDP",
        )
