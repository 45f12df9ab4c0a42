"""``kiln-server migrate``, ``kiln-server token create`` on a fresh data directory, and
the worker's refusal of bad settings."""

from __future__ import annotations

import os
import subprocess
import sys

from kiln_server.db import make_engine, make_sessionmaker, session_scope
from kiln_server.services import auth


def _cli(*args: str, data_dir) -> str:
    out = subprocess.run([sys.executable, "-m", "kiln_server", *args, "--data-dir",
                          str(data_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_migrate_then_token_create(tmp_path):
    assert "up to date" in _cli("migrate", data_dir=tmp_path)
    user_token = _cli("token", "create", "--user", "alice", data_dir=tmp_path).strip()
    worker_token = _cli("token", "create", "--user", "alice", "--worker",
                        data_dir=tmp_path).strip().splitlines()[-1]
    factory = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'kiln.db'}"))
    with session_scope(factory) as s:
        user, token = auth.authenticate(s, user_token.splitlines()[-1])
        assert (user.name, token.worker) == ("alice", False)
        assert auth.authenticate(s, worker_token)[1].worker is True
        assert auth.authenticate(s, "kiln_not-a-token") is None


def test_worker_refuses_a_bad_dataset_memory_bound_naming_it():
    for args, env in ((["--dataset-memory-mb", "-5"], {}),
                      ([], {"KILN_WORKER_DATASET_MEMORY_MB": "lots"})):
        out = subprocess.run([sys.executable, "-m", "kiln_server", "worker", "--url",
                              "http://127.0.0.1:9", "--token", "t", *args],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, **env})
        assert out.returncode == 2
        assert "--dataset-memory-mb" in out.stderr and "KILN_WORKER_DATASET_MEMORY_MB" in \
            out.stderr and "Traceback" not in out.stderr
