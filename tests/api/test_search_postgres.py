"""`lmtune tune --storage postgresql://...`: two workers share a study on a PostgreSQL server the test starts
(Debian's postgresql package and psycopg2, installed by `make test-slow`)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from lmtune.api.search import tune

pytestmark = pytest.mark.slow


def _bin(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)


@pytest.fixture
def postgres():
    initdb, server = _bin("initdb"), _bin("postgres")
    if initdb is None or server is None:
        pytest.skip("PostgreSQL is not installed (make test-slow installs it)")
    pytest.importorskip("psycopg2")
    # Not under tmp_path: pytest makes /tmp/pytest-of-root private (0700), which the postgres user cannot enter.
    data = Path(tempfile.mkdtemp(prefix="lmtune-pg-"))
    # PostgreSQL refuses to run as root: run it as the postgres user Debian's package creates.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "lmtune", "--auth=trust"], check=True, capture_output=True)
    proc = subprocess.Popen([*as_user, server, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(data)])
    url = f"postgresql+psycopg2://lmtune@127.0.0.1:{port}/postgres"
    import sqlalchemy

    for _ in range(100):
        try:
            sqlalchemy.create_engine(url).connect().close()
            break
        except sqlalchemy.exc.OperationalError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_a_postgres_study(tmp_path: Path, postgres: str) -> None:
    from api.test_search import REPO, _worker, study_config

    cfg = study_config(tmp_path, {"train.lr": {"uniform": [1.0e-3, 2.0e-3]}}, n_trials=4, pruner="none")
    cfg["train"]["max_steps"] = 2
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    other = _worker(path, "--storage", postgres, "-o", str(tmp_path / "s"))
    tune(path, storage=postgres, study_dir=tmp_path / "s")
    assert other.wait(timeout=600) == 0, REPO
    import optuna

    trials = optuna.load_study(study_name="tiny", storage=postgres).trials
    assert len(trials) >= 4 and all(t.state.name == "COMPLETE" for t in trials)
