"""The studio: server-rendered pages over the service (lmtune/html.py's page and tables) with a little plain
JavaScript (static/studio.js, shipped in the package: no build step, no CDN, works offline).

Pages: `/` jobs and files, and the form that uploads a file, shows `lmtune estimate`'s memory and time, and starts a
job; `/studio/jobs/{id}` the job with its loss curves, live over server-sent events; `/studio/jobs/{id}/report` the
run's report.html; `/studio/files/{id}` the data check of a file with its first examples and their loss mask;
`/studio/compare` two runs side by side; `/studio/chat` a playground against any served model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse

from lmtune.html import Markup, esc, page, table
from lmtune.serve.app import _body
from lmtune.serve.protocol import ApiError
from lmtune.serve.registry import Registry
from lmtune.service.routes import ServiceLimits, _file, _job, authorize
from lmtune.service.scheduler import Scheduler
from lmtune.service.store import TERMINAL, Store

STATIC = Path(__file__).parent / "static"
_NAV = ('<p class="muted"><a href="/">jobs &amp; files</a> · <a href="/studio/chat">chat</a> · '
        '<a href="/studio/compare">compare runs</a></p>')  # fmt: skip
_HEAD = '<link rel="stylesheet" href="/studio/static/studio.css"><script src="/studio/static/studio.js" defer></script>'


def _page(title: str, *body: str) -> HTMLResponse:
    return HTMLResponse(page(title, [_HEAD, f"<h1>{esc(title)}</h1>", _NAV, *body]))


def add_studio_routes(app: FastAPI, store: Store, scheduler: Scheduler, registry: Registry, limits: ServiceLimits):
    def guard(request: Request) -> HTMLResponse | None:
        try:
            authorize(request, limits)
        except ApiError:
            login = ('<form id="login"><label>API key <input type="password" name="key"></label> '
                     '<button>Open the studio</button></form>')  # fmt: skip
            response = _page("lmtune studio: key needed", login)
            response.status_code = 401
            return response
        return None

    @app.get("/studio/static/{name}")
    async def static(name: str) -> Response:
        if name not in ("studio.js", "studio.css"):
            raise ApiError(404, "no such file")
        return FileResponse(STATIC / name, headers={"Cache-Control": "max-age=3600"})

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        return guard(request) or _page("lmtune studio", *_index_body(store))

    @app.get("/studio/jobs/{job_id}", response_class=HTMLResponse)
    async def job_page(request: Request, job_id: str) -> HTMLResponse:
        return guard(request) or _page(f"job {job_id}", *_job_body(store, _job(store, job_id)))

    @app.get("/studio/jobs/{job_id}/report")
    async def report(request: Request, job_id: str) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        path = Path(_job(store, job_id)["run_dir"]) / "report.html"
        if not path.is_file():
            raise ApiError(404, "the report is written when the job finishes")
        return FileResponse(path, media_type="text/html")

    @app.get("/studio/jobs/{job_id}/stream")
    async def stream(request: Request, job_id: str) -> StreamingResponse:
        authorize(request, limits)
        job = _job(store, job_id)
        return StreamingResponse(_metrics_stream(store, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip

    @app.get("/studio/files/{file_id}", response_class=HTMLResponse)
    async def file_page(request: Request, file_id: str, model: str = "preset:tiny-chat") -> HTMLResponse:
        if (denied := guard(request)) is not None:
            return denied
        f = _file(store, file_id)
        body = await asyncio.to_thread(_file_body, store, f, model)
        return _page(f"file {f['filename']}", *body)

    @app.post("/studio/estimate")
    async def estimate(request: Request) -> dict[str, Any]:
        authorize(request, limits)
        ask = json.loads(await _body(request, limits))  # type: ignore[arg-type]
        f = _file(store, str(ask.get("training_file", "")), param="training_file")
        return await asyncio.to_thread(_estimate, store, f, ask)

    @app.get("/studio/compare", response_class=HTMLResponse)
    async def compare(request: Request, a: str | None = None, b: str | None = None) -> HTMLResponse:
        if (denied := guard(request)) is not None:
            return denied
        return _page("compare two runs", *_compare_body(store, a, b))

    @app.get("/studio/chat", response_class=HTMLResponse)
    async def chat(request: Request, model: str | None = None) -> HTMLResponse:
        if (denied := guard(request)) is not None:
            return denied
        options = "".join(f"<option{' selected' if m == model else ''}>{esc(m)}</option>" for m in registry.models)
        form = (f'<form id="chat"><select name="model">{options}</select><br><textarea name="message" rows="3" '
                'cols="80">What is 2 plus 3?</textarea><br><button>Send</button></form><div id="answers"></div>')  # fmt: skip
        return _page("chat playground", form if options else "<p>No model is served yet: train one first.</p>")


def _index_body(store: Store) -> list[str]:
    jobs = store.jobs(limit=200)
    rows = [
        (Markup(f'<a href="/studio/jobs/{esc(j["id"])}">{esc(j["id"])}</a>'), j["model"],
         Markup(f'<span class="status-{esc(j["status"])}">{esc(j["status"])}</span>'), j["fine_tuned_model"] or "")
        for j in jobs
    ]  # fmt: skip
    files = [f for f in store.files() if f["purpose"] == "fine-tune"]
    file_rows = [(Markup(f'<a href="/studio/files/{esc(f["id"])}">{esc(f["id"])}</a>'), f["filename"], f["bytes"])
                 for f in files[:200]]  # fmt: skip
    options = "".join(f'<option value="{esc(f["id"])}">{esc(f["filename"])} ({esc(f["id"])})</option>' for f in files)
    form = f"""<h2>Start a job</h2><form id="new-job">
<label>Training file <input type="file" name="upload" accept=".jsonl"></label> or
<select name="training_file"><option value="">(upload)</option>{options}</select><br>
<label>Model <input name="model" value="preset:tiny-chat" size="30"></label>
<label>Method <select name="method"><option>lora</option><option>full</option><option>dora</option></select></label>
<label>Epochs <input name="n_epochs" type="number" value="1" min="1" style="width:4em"></label>
<label>Batch <input name="batch_size" type="number" value="8" min="1" style="width:4em"></label>
<label>LR multiplier <input name="lr_mult" type="number" value="1" step="any" style="width:5em"></label>
<label>Max steps <input name="max_steps" type="number" min="1" style="width:5em"></label><br>
<button type="button" id="estimate">Estimate memory and time</button> <button id="start">Start the job</button>
</form><div id="estimate-out" class="muted"></div>"""
    return [form, "<h2>Jobs</h2>", table(["job", "model", "status", "fine-tuned model"], rows, cls="wide"),
            "<h2>Files</h2>", table(["file", "name", "bytes"], file_rows, numeric=[2])]  # fmt: skip


def _job_body(store: Store, job: dict[str, Any]) -> list[str]:
    jid = esc(job["id"])
    links = [f'<a href="/studio/jobs/{jid}/report">report</a>'] if job["status"] == "succeeded" else []
    if job["fine_tuned_model"] and job["status"] == "succeeded":
        links.append(f'<a href="/studio/chat?model={esc(job["fine_tuned_model"])}">chat with it</a>')
    cancel = "" if job["status"] in TERMINAL else f'<button id="cancel" data-job="{jid}">Cancel</button>'
    error = f'<p class="error">{esc(job["error"]["message"])}</p>' if job["error"] else ""
    events = store.events(job["id"], limit=30, newest_first=True)
    event_rows = [(e["level"], e["message"]) for e in events]
    return [
        f'<p>status <b id="status">{esc(job["status"])}</b> · model {esc(job["model"])} · '
        f'{" · ".join(links)} {cancel}</p>{error}',
        f'<svg id="curve" data-job="{jid}" width="720" height="260" viewBox="0 0 720 260"></svg>'
        '<p class="muted"><span class="train">— training loss</span> <span class="val">— validation loss</span> · '
        '<span id="last-step"></span></p>',
        "<h2>Events (newest first)</h2>", table(["level", "message"], event_rows, cls="wide"),
    ]  # fmt: skip


async def _metrics_stream(store: Store, job: dict[str, Any]) -> AsyncIterator[str]:
    """The run's metrics.jsonl as it grows, one `metric` event per row, then the job's status when it changes."""
    path, offset, status = Path(job["run_dir"]) / "metrics.jsonl", 0, None
    while True:
        current = store.job(job["id"]) or job
        if current["status"] != status:
            status = current["status"]
            yield f"event: status\ndata: {json.dumps(status)}\n\n"
        if path.is_file():
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.decode("utf-8").splitlines():
                yield f"event: metric\ndata: {line}\n\n"
        if status in TERMINAL:
            return
        await asyncio.sleep(0.3)


def _file_body(store: Store, f: dict[str, Any], model: str) -> list[str]:
    from lmtune.api import check_data, preview
    from lmtune.errors import LmtuneError

    cfg = {"model": {"name": model}, "data": {"train": str(store.file_path(f["id"]))}}
    try:
        report = check_data(cfg)
    except LmtuneError as e:
        return [f'<p class="error">{esc(e)}</p>']
    try:  # the check lists the bad records above; the preview shows the first sound ones
        items, unrendered = preview({**cfg, "data": {**cfg["data"], "on_bad_record": "skip"}}, n=3), ""
    except LmtuneError as e:
        items, unrendered = [], f'<p class="error">{esc(e.message)}</p>'
    rows = [(x.severity, x.check, x.line or "", x.field or "", x.message) for x in report.findings[:100]]
    split = report.splits["train"]
    out = [f"<p>{split.records} records · {len(report.errors)} errors · {len(report.warnings)} warnings "
           f"(checked for {esc(model)})</p>", table(["severity", "check", "line", "field", "message"], rows, cls="wide"),
           "<h2>First examples as training renders them</h2><p class='muted'>highlighted: the tokens trained on "
           "(the loss mask)</p>", unrendered]  # fmt: skip
    for item in items:
        text = "".join(f"<mark>{esc(s)}</mark>" if trained else esc(s) for s, trained in item.segments)
        out.append(f"<p>line {item.line}: {item.trained} of {item.tokens} tokens trained</p><pre>{text}</pre>")
    return out


def _estimate(store: Store, f: dict[str, Any], ask: dict[str, Any]) -> dict[str, Any]:
    from lmtune.api import estimate
    from lmtune.errors import LmtuneError

    train = {k: v for k, v in {"epochs": ask.get("n_epochs"), "batch_size": ask.get("batch_size"),
                               "max_steps": ask.get("max_steps")}.items() if v}  # fmt: skip
    cfg = {"model": {"name": str(ask.get("model", ""))}, "method": {"name": str(ask.get("method", "lora"))},
           "data": {"train": str(store.file_path(f["id"]))}, "train": train}  # fmt: skip
    try:
        result = estimate(cfg)
    except LmtuneError as e:
        raise ApiError(400, str(e)) from None
    return {"peak_memory_mb": round(result.memory.peak / 1e6, 1), "time_s": round(result.time_s, 1),
            "steps": result.steps, "trainable_params": result.trainable_params, "total_params": result.total_params}  # fmt: skip


def _compare_body(store: Store, a: str | None, b: str | None) -> list[str]:
    from lmtune.report.run import read_run

    done = store.jobs(status="succeeded", limit=200)
    options = "".join(f'<option value="{esc(j["id"])}">{esc(j["fine_tuned_model"])}</option>' for j in done)
    form = (f'<form method="get"><select name="a">{options}</select> vs <select name="b">{options}</select> '
            "<button>Compare</button></form>")  # fmt: skip
    if not (a and b):
        return [form]
    runs = [read_run(_job(store, a)["run_dir"]), read_run(_job(store, b)["run_dir"])]
    keys = [
        "val_loss_before",
        "val_loss_after",
        "first_train_loss",
        "last_train_loss",
        "steps",
        "trainable_parameters",
        "train_time_s",
    ]
    rows = [(k, *(r.summary.get(k, "") for r in runs)) for k in keys]
    rows += [("method", *(r.method.get("name", "") for r in runs)), ("model", *(r.model for r in runs))]
    curves = "".join(f'<svg class="static-curve" width="360" height="200" data-metrics="{esc(json.dumps(r.metrics))}">'
                     "</svg>" for r in runs)  # fmt: skip
    return [form, table(["", a, b], rows), curves]
