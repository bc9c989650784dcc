"""`validating_files`: a job's files go through lmtune's data check (`lmtune.check_data` on the job's own config:
its model's tokenizer, task and max_length) before the job is queued. An error fails the job the way OpenAI reports
it: `error.code` invalid_training_file / invalid_validation_file, a message naming the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.service.store import Store


def validate_job(store: Store, job: dict[str, Any]) -> bool:
    """Check the job's files; queue it (True) or fail it. Warnings become events."""
    from lmtune.api.check import check_data
    from lmtune.errors import LmtuneError

    job_id, cfg = job["id"], job["config"]
    params = {_resolved(cfg["data"]["train"]): "training_file"}
    if cfg["data"].get("validation"):
        params[_resolved(cfg["data"]["validation"])] = "validation_file"
    store.add_event(job_id, "Validating training file: " + job["request"]["training_file"])
    try:
        report = check_data(cfg)
    except LmtuneError as e:
        return _fail(store, job_id, "invalid_request", str(e), None)
    for finding in report.warnings[:20]:
        store.add_event(job_id, f"{_where(finding, params)}{finding.message}", level="warn")
    if report.errors:
        first = report.errors[0]
        param = params.get(_resolved(first.source or ""), "training_file")
        more = f" ({len(report.errors) - 1} more problems)" if len(report.errors) > 1 else ""
        return _fail(store, job_id, f"invalid_{param}", f"{_where(first, params)}{first.message}{more}", param)
    store.add_event(job_id, "Files validated, moving job to queued state")
    store.update_job(job_id, status="queued")
    return True


def _where(finding: Any, params: dict[str, str]) -> str:
    """'training_file line 3, field 'messages': ' — the file by its API name, never by the server's path."""
    if finding.source is None:
        return ""
    where = params.get(_resolved(finding.source), Path(finding.source).name)
    if finding.line is not None:
        where += f" line {finding.line}"
    if finding.field:
        where += f", field '{finding.field}'"
    return where + ": "


def _resolved(path: str) -> str:
    return str(Path(path).resolve())


def _fail(store: Store, job_id: str, code: str, message: str, param: str | None) -> bool:
    store.add_event(job_id, f"Validation of the files failed: {message}", level="error")
    store.finish_job(job_id, "failed", error={"code": code, "message": message, "param": param})
    return False
