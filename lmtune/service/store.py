"""The service's state: files, jobs and job events in one SQLite database (WAL) under STORE.

SQLite in WAL mode lets the server and its worker subprocesses read while one writes, and survives a kill -9 of any
of them: a job's row is the truth the restarted server resumes from. Each call opens its own short connection, so
threads and processes never share one.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
create table if not exists files (
  id text primary key, bytes integer, created_at integer, filename text, purpose text, status text
);
create table if not exists jobs (
  id text primary key, created_at integer, model text, request text, status text, started_at integer,
  finished_at integer, fine_tuned_model text, trained_tokens integer, error text, result_files text,
  pid integer, cancel_requested integer default 0, run_dir text, config text
);
create table if not exists events (
  seq integer primary key autoincrement, job_id text, created_at integer, level text, message text, type text,
  data text
);
create index if not exists events_job on events (job_id, seq);
"""
# Ids name files on disk: only these shapes are accepted from a client (no path traversal).
ID_PATTERN = re.compile(r"^(file|ftjob)-[A-Za-z0-9]{8,64}$")
TERMINAL = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def valid_id(value: str, prefix: str) -> bool:
    return bool(ID_PATTERN.match(value)) and value.startswith(prefix + "-")


class Store:
    """The database of one STORE directory: `files/` holds the uploads by id, `runs/` one run directory per job."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.runs_dir = self.root / "runs"
        for d in (self.root, self.files_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "lmtune.sqlite"
        with self._db() as db:
            db.execute("pragma journal_mode=wal")
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # Files.
    def add_file(self, file_id: str, size: int, filename: str, purpose: str) -> dict[str, Any]:
        row = (file_id, size, int(time.time()), filename, purpose, "processed")
        with self._db() as db:
            db.execute("insert into files values (?, ?, ?, ?, ?, ?)", row)
        return self.file(file_id) or {}

    def file(self, file_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("select * from files where id = ?", (file_id,)).fetchone()
        return dict(row) if row else None

    def files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        query, args = "select * from files", ()
        if purpose:
            query, args = query + " where purpose = ?", (purpose,)
        with self._db() as db:
            return [dict(r) for r in db.execute(query + " order by rowid desc", args)]

    def delete_file(self, file_id: str) -> None:
        with self._db() as db:
            db.execute("delete from files where id = ?", (file_id,))

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.jsonl"

    # Jobs.
    def add_job(self, job_id: str, model: str, request: dict[str, Any], config: dict[str, Any]) -> None:
        row = (job_id, int(time.time()), model, json.dumps(request), "validating_files", config["output_dir"])
        with self._db() as db:
            db.execute(
                "insert into jobs (id, created_at, model, request, status, run_dir, config) values (?, ?, ?, ?, ?, ?, ?)",
                (*row, json.dumps(config)),
            )

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("select * from jobs where id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, *, after: str | None = None, limit: int = 20, status: str | None = None) -> list[dict[str, Any]]:
        """Newest first; `after`: the jobs created before that one (OpenAI's cursor)."""
        clauses, args = [], []
        if after is not None:
            clauses.append("rowid < (select rowid from jobs where id = ?)")
            args.append(after)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        where = f" where {' and '.join(clauses)}" if clauses else ""
        with self._db() as db:
            rows = db.execute(f"select * from jobs{where} order by rowid desc limit ?", (*args, limit))
            return [_job(r) for r in rows]

    def oldest(self, status: str) -> list[dict[str, Any]]:
        with self._db() as db:
            return [_job(r) for r in db.execute("select * from jobs where status = ? order by rowid", (status,))]

    def update_job(self, job_id: str, **fields: Any) -> None:
        if not fields:
            return
        for key in ("error", "result_files"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._db() as db:
            db.execute(f"update jobs set {sets} where id = ?", (*fields.values(), job_id))

    def finish_job(self, job_id: str, status: str, *, unless: tuple[str, ...] = TERMINAL, **fields: Any) -> bool:
        """Set a terminal status unless the job already has one of `unless` (a cancel is not overwritten by a
        failure that the cancel caused). True when this call set it."""
        if "error" in fields and fields["error"] is not None:
            fields["error"] = json.dumps(fields["error"])
        if "result_files" in fields:
            fields["result_files"] = json.dumps(fields["result_files"])
        fields = {**fields, "status": status, "finished_at": int(time.time())}
        sets = ", ".join(f"{k} = ?" for k in fields)
        marks = ", ".join("?" for _ in unless)
        with self._db() as db:
            cur = db.execute(
                f"update jobs set {sets} where id = ? and status not in ({marks})", (*fields.values(), job_id, *unless)
            )
            return cur.rowcount == 1

    # Events.
    def add_event(
        self, job_id: str, message: str, *, level: str = "info", kind: str = "message", data: Any = None
    ) -> None:
        with self._db() as db:
            db.execute(
                "insert into events (job_id, created_at, level, message, type, data) values (?, ?, ?, ?, ?, ?)",
                (job_id, int(time.time()), level, message, kind, json.dumps(data) if data is not None else None),
            )

    def events(
        self, job_id: str, *, after_seq: int = 0, before_seq: int | None = None, limit: int = 10_000,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:  # fmt: skip
        order = "desc" if newest_first else "asc"
        before = before_seq if before_seq is not None else 1 << 62
        with self._db() as db:
            rows = db.execute(
                f"select * from events where job_id = ? and seq > ? and seq < ? order by seq {order} limit ?",
                (job_id, after_seq, before, limit),
            )
            return [{**dict(r), "data": json.loads(r["data"]) if r["data"] else None} for r in rows]


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["request"] = json.loads(job["request"] or "{}")
    job["config"] = json.loads(job["config"] or "{}")
    for key in ("error", "result_files"):
        job[key] = json.loads(job[key]) if job[key] else None
    return job
