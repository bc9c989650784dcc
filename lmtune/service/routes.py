"""OpenAI's files and fine-tuning jobs routes, over the store and the scheduler."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import Response

from lmtune.serve.app import _body, _parse
from lmtune.serve.protocol import ApiError
from lmtune.service.jobs import JobRequest, event_object, fine_tuned_name, job_object, run_config
from lmtune.service.scheduler import Scheduler
from lmtune.service.store import TERMINAL, Store, new_id, valid_id

PURPOSES = ("fine-tune", "fine-tune-results")
COOKIE = "lmtune_key"


@dataclass(frozen=True)
class ServiceLimits:
    api_key: str | None = None
    max_upload_bytes: int = 64 << 20
    max_body_bytes: int = 1 << 20


def authorize(request: Request, limits: ServiceLimits) -> None:
    """The key from `Authorization: Bearer KEY` (API clients) or the studio's cookie (browsers), compared in
    constant time."""
    if limits.api_key is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    given = given or unquote(request.cookies.get(COOKIE, ""))
    if not hmac.compare_digest(given.encode(), limits.api_key.encode()):
        raise ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY)", code="invalid_api_key")


def add_file_routes(app: FastAPI, store: Store, limits: ServiceLimits) -> None:
    @app.post("/v1/files")
    async def upload(request: Request) -> dict[str, Any]:
        authorize(request, limits)
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():
            raise ApiError(411, "an upload must declare its Content-Length")
        if int(declared) > limits.max_upload_bytes:
            raise ApiError(413, f"upload over {limits.max_upload_bytes} bytes", code="file_too_large")
        form = await request.form(max_files=1, max_fields=4)
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "fine-tune":
            raise ApiError(400, "purpose must be 'fine-tune'", param="purpose")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "send the JSONL as the multipart field 'file'", param="file")
        file_id = new_id("file")
        path, size = store.file_path(file_id), 0
        with path.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > limits.max_upload_bytes:
                    out.close()
                    path.unlink()
                    raise ApiError(413, f"upload over {limits.max_upload_bytes} bytes", code="file_too_large")
                out.write(chunk)
        name = (upload.filename or "upload.jsonl").replace("/", "_")[-200:]  # shown only, never a path
        return _file_object(store.add_file(file_id, size, name, purpose))

    @app.get("/v1/files")
    async def list_files(request: Request, purpose: str | None = None) -> dict[str, Any]:
        authorize(request, limits)
        return {"object": "list", "data": [_file_object(f) for f in store.files(purpose)], "has_more": False}

    @app.get("/v1/files/{file_id}")
    async def get_file(request: Request, file_id: str) -> dict[str, Any]:
        authorize(request, limits)
        return _file_object(_file(store, file_id))

    @app.get("/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> Response:
        authorize(request, limits)
        _file(store, file_id)
        media = "text/csv" if store.file(file_id)["purpose"] == "fine-tune-results" else "application/jsonl"  # type: ignore[index]
        return Response(store.file_path(file_id).read_bytes(), media_type=media)

    @app.delete("/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
        authorize(request, limits)
        _file(store, file_id)
        for status in ("validating_files", "queued", "running"):
            for job in store.oldest(status):
                if file_id in (job["request"].get("training_file"), job["request"].get("validation_file")):
                    raise ApiError(409, f"{job['id']} ({status}) still uses {file_id}", param="file_id")
        store.delete_file(file_id)
        store.file_path(file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}


def add_job_routes(app: FastAPI, store: Store, scheduler: Scheduler, limits: ServiceLimits) -> None:
    @app.post("/v1/fine_tuning/jobs")
    async def create(request: Request) -> dict[str, Any]:
        authorize(request, limits)
        req = _parse(JobRequest, await _body(request, limits))  # type: ignore[arg-type]
        train = _file(store, req.training_file, param="training_file")
        val = _file(store, req.validation_file, param="validation_file") if req.validation_file else None
        job_id = new_id("ftjob")
        try:
            cfg = run_config(req, job_id, str(store.file_path(train["id"])),
                             str(store.file_path(val["id"])) if val else None, str(store.runs_dir / job_id))  # fmt: skip
        except ValueError as e:
            raise ApiError(400, str(e), code="invalid_value") from None
        store.add_job(job_id, req.model, req.model_dump(exclude_none=True), cfg)
        store.add_event(job_id, f"Created fine-tuning job: {job_id}")
        scheduler.wake()
        return job_object(store.job(job_id))  # type: ignore[arg-type]

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        authorize(request, limits)
        if after is not None and not valid_id(after, "ftjob"):
            raise ApiError(400, "after: not a job id", param="after")
        limit = max(1, min(limit, 100))
        rows = store.jobs(after=after, limit=limit + 1)
        return {"object": "list", "data": [job_object(j) for j in rows[:limit]], "has_more": len(rows) > limit}

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    async def retrieve(request: Request, job_id: str) -> dict[str, Any]:
        authorize(request, limits)
        return job_object(_job(store, job_id))

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: str) -> dict[str, Any]:
        authorize(request, limits)
        job = _job(store, job_id)
        if job["status"] in TERMINAL:
            raise ApiError(400, f"the job is already {job['status']}", param="job_id", code="job_not_cancellable")
        store.update_job(job_id, cancel_requested=1)
        # Not yet training: cancelled at once. Training: the worker stops after its current optimizer step.
        if store.finish_job(job_id, "cancelled", unless=(*TERMINAL, "running")):
            store.add_event(job_id, "Fine-tuning job cancelled")
        else:
            store.add_event(job_id, "Cancel requested: stopping after the current optimizer step")
        scheduler.wake()
        return job_object(store.job(job_id))  # type: ignore[arg-type]

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def events(request: Request, job_id: str, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        authorize(request, limits)
        _job(store, job_id)
        before = None
        if after is not None:
            if not after.removeprefix("ftevent-").isdigit():
                raise ApiError(400, "after: not an event id", param="after")
            before = int(after.removeprefix("ftevent-"))
        limit = max(1, min(limit, 1000))
        rows = store.events(job_id, limit=limit + 1, newest_first=True, before_seq=before)
        return {"object": "list", "data": [event_object(e) for e in rows[:limit]], "has_more": len(rows) > limit}

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def checkpoints(request: Request, job_id: str) -> dict[str, Any]:
        authorize(request, limits)
        job = _job(store, job_id)
        return {"object": "list", "data": checkpoint_objects(job), "has_more": False}


def checkpoint_objects(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's checkpoints on disk (newest first), with the training metrics logged at their step."""
    from pathlib import Path

    from lmtune.report.run import read_run
    from lmtune.train.checkpoint import list_checkpoints

    run_dir = Path(job["run_dir"])
    found = list_checkpoints(run_dir)
    by_step: dict[int, dict[str, Any]] = {}
    for rec in read_run(run_dir).metrics if found else []:
        key = "train_loss" if rec.get("split") == "train" else "valid_loss"
        by_step.setdefault(rec["step"], {"step": rec["step"]})[key] = rec.get("loss")
    out = []
    for path in reversed(found):
        step = int(path.name.removeprefix("step-"))
        out.append({
            "id": f"ftckpt-{job['id'].removeprefix('ftjob-')}-{step}",
            "object": "fine_tuning.job.checkpoint",
            "created_at": int(path.stat().st_mtime),
            "fine_tuned_model_checkpoint": f"{fine_tuned_name(job)}:ckpt-step-{step}",
            "fine_tuning_job_id": job["id"],
            "step_number": step,
            "metrics": by_step.get(step, {"step": step}),
        })  # fmt: skip
    return out


def _file(store: Store, file_id: str, param: str = "file_id") -> dict[str, Any]:
    found = store.file(file_id) if valid_id(file_id, "file") else None
    if found is None:
        raise ApiError(404, f"no such file: {file_id[:80]!r}", param=param, code="file_not_found")
    return found


def _job(store: Store, job_id: str) -> dict[str, Any]:
    found = store.job(job_id) if valid_id(job_id, "ftjob") else None
    if found is None:
        raise ApiError(404, f"no such fine-tuning job: {job_id[:80]!r}", param="job_id", code="job_not_found")
    return found


def _file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": row["status"],
        "expires_at": None,
        "status_details": None,
    }
