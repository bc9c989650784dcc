import json
import os
import stat

import pytest

from lmtune.fileio import atomic_write_json, atomic_write_text, file_sha256


def test_atomic_write_json_writes_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_json(path, {"step": 3, "loss": 1.5})
    atomic_write_json(path, {"step": 4})
    assert json.loads(path.read_text(encoding="utf-8")) == {"step": 4}
    assert os.listdir(path.parent) == ["state.json"]


def test_failed_atomic_write_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, '{"step": 2}')
    monkeypatch.undo()
    assert json.loads(path.read_text(encoding="utf-8")) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_written_files_get_normal_permissions_and_their_hash(tmp_path):
    old = os.umask(0o022)
    try:
        digest = atomic_write_text(tmp_path / "report.html", "<p>hi</p>")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o644  # not mkstemp's private 0600
    assert digest == file_sha256(tmp_path / "report.html")
