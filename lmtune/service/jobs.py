"""A fine-tuning job as OpenAI's API states it, mapped onto lmtune's RunConfig, and back into OpenAI's job object.

OpenAI's hyperparameters (n_epochs, batch_size, learning_rate_multiplier, and `method.type` supervised or dpo with
its beta) become `train.epochs`, `train.batch_size`, `train.lr` (the multiplier times lmtune's default rate for the
method) and the task; lmtune's own settings (method and LoRA rank, max_steps, max_length, ...) ride in an `lmtune`
extension field, a partial RunConfig. The result is validated by RunConfig itself, so a bad setting is refused when
the job is created, not when it runs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmtune.config import RunConfig, TrainConfig, format_validation_error

# Paths and names the server owns: a client never points a run at a file on the server's disk.
_SERVER_OWNED = {"output_dir", "name", "task"}
_SERVER_OWNED_DATA = {"train", "validation", "test"}
_SUFFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_LR = {"full": 3e-3}  # a random-init or fully trained model wants more than LoRA's TrainConfig default


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    beta: float | Literal["auto"] = "auto"  # dpo


class MethodSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised", "dpo"] = "supervised"
    supervised: dict[str, Any] | None = None
    dpo: dict[str, Any] | None = None

    def hyperparameters(self) -> Hyperparameters:
        inner = (self.supervised if self.type == "supervised" else self.dpo) or {}
        return Hyperparameters.model_validate(inner.get("hyperparameters") or {})


class JobRequest(BaseModel):
    """POST /v1/fine_tuning/jobs (OpenAI's fields, plus `lmtune`)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    hyperparameters: Hyperparameters | None = None
    method: MethodSpec | None = None
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None
    lmtune: dict[str, Any] | None = None


def run_config(req: JobRequest, job_id: str, train_path: str, val_path: str | None, run_dir: str) -> dict[str, Any]:
    """The RunConfig (as a dict) the job trains; raises ValueError with the field named when it is invalid."""
    if req.suffix is not None and not _SUFFIX.match(req.suffix):
        raise ValueError("suffix: letters, digits, '.', '_' and '-' only, at most 64")
    method = req.method or MethodSpec()
    hp = req.hyperparameters if req.hyperparameters is not None else method.hyperparameters()
    extra = dict(req.lmtune or {})
    owned = _SERVER_OWNED & extra.keys() | {f"data.{k}" for k in _SERVER_OWNED_DATA & (extra.get("data") or {}).keys()}
    if owned:
        raise ValueError(f"lmtune.{sorted(owned)[0]}: set by the server, not by a job")
    cfg: dict[str, Any] = {k: v for k, v in extra.items()}
    cfg.update(name=job_id, task="dpo" if method.type == "dpo" else "sft", output_dir=run_dir)
    cfg["model"] = {**(extra.get("model") or {}), "name": req.model}
    cfg["data"] = {**(extra.get("data") or {}), "train": train_path}
    if val_path is not None:
        cfg["data"]["validation"] = val_path
    if req.seed is not None:
        cfg["seed"] = req.seed
    train = dict(extra.get("train") or {})
    if hp.n_epochs != "auto":
        train["epochs"] = hp.n_epochs
    if hp.batch_size != "auto":
        train["batch_size"] = hp.batch_size
    if hp.learning_rate_multiplier != "auto":
        method_name = (extra.get("method") or {}).get("name", "lora")
        base = DEFAULT_LR.get(method_name, TrainConfig.model_fields["lr"].default)
        train["lr"] = base * hp.learning_rate_multiplier
    cfg["train"] = train
    if hp.beta != "auto":
        cfg["preference"] = {**(extra.get("preference") or {}), "beta": hp.beta}
    _validate(cfg)
    return cfg


def _validate(cfg: dict[str, Any]) -> None:
    from pydantic import ValidationError

    try:
        RunConfig.model_validate(cfg)
    except ValidationError as e:
        raise ValueError(format_validation_error(e, "job")) from None


def fine_tuned_name(job: dict[str, Any]) -> str:
    """OpenAI's `ft:<base>:<suffix>:<id>` (the organisation part is left out: there is none)."""
    suffix = job["request"].get("suffix") or "lmtune"
    return f"ft:{job['model']}:{suffix}:{job['id'].removeprefix('ftjob-')}"


def job_object(job: dict[str, Any]) -> dict[str, Any]:
    """The row as OpenAI's FineTuningJob."""
    req = job["request"]
    cfg = job["config"]
    train = cfg.get("train") or {}
    method_type = (req.get("method") or {}).get("type", "supervised")
    hp = {
        "n_epochs": train.get("epochs", TrainConfig.model_fields["epochs"].default),
        "batch_size": train.get("batch_size", TrainConfig.model_fields["batch_size"].default),
        "learning_rate_multiplier": (req.get("hyperparameters") or {}).get("learning_rate_multiplier", "auto"),
    }
    return {
        "id": job["id"],
        "object": "fine_tuning.job",
        "created_at": job["created_at"],
        "finished_at": job["finished_at"],
        "model": job["model"],
        "fine_tuned_model": job["fine_tuned_model"],
        "organization_id": "lmtune",
        "status": job["status"],
        "training_file": req.get("training_file"),
        "validation_file": req.get("validation_file"),
        "hyperparameters": hp,
        "method": {"type": method_type, method_type: {"hyperparameters": hp}},
        "result_files": job["result_files"] or [],
        "trained_tokens": job["trained_tokens"],
        "error": job["error"],
        "seed": cfg.get("seed", 42),
        "suffix": req.get("suffix"),
        "metadata": req.get("metadata"),
        "estimated_finish": None,
        "integrations": [],
        "user_provided_suffix": req.get("suffix"),
    }


def event_object(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"ftevent-{event['seq']}",
        "object": "fine_tuning.job.event",
        "created_at": event["created_at"],
        "level": event["level"],
        "message": event["message"],
        "type": event["type"],
        "data": event["data"],
    }
