"""A running `lmtune server` over a fresh store (with a key), and small JSONL files in OpenAI's chat format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_support import KEY, running_service
from support import chat_record, write_jsonl


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_service(tmp_path_factory.mktemp("store"), api_key=KEY, max_upload_bytes=64 << 10) as svc:
        yield svc


@pytest.fixture(scope="session")
def chat_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    return {
        "train": write_jsonl(root / "train.jsonl", [chat_record(i) for i in range(24)]),
        "validation": write_jsonl(root / "validation.jsonl", [chat_record(100 + i) for i in range(6)]),
    }
