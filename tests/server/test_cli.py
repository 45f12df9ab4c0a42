"""``kiln-server migrate``, ``kiln-server token create | list | revoke`` on a fresh data
directory, and the worker's refusal of bad settings."""

from __future__ import annotations

import os
import re
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


def _run(*args: str, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiln_server", *args, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=60)


def _table(out: str) -> list[dict[str, str]]:
    """``token list``'s table as one dict a row, by the header's names."""
    header, *rows = out.splitlines()
    names = header.split()
    assert names == ["ID", "USER", "KIND", "PREFIX", "CREATED"]
    return [dict(zip(names, row.split(maxsplit=4), strict=True)) for row in rows]


def test_tokens_are_listed_without_secrets_and_revoked_by_id_or_token(tmp_path):
    created = _run("token", "create", "--user", "alice", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    first_admin = created.stderr.split("Kiln admin token (shown once, stored hashed): ")[1]
    first_admin = first_admin.split()[0]
    alice = created.stdout.strip()
    worker = _cli("token", "create", "--user", "alice", "--worker", data_dir=tmp_path).strip()
    root = _cli("token", "create", "--user", "root", "--admin", data_dir=tmp_path).strip()

    out = _cli("token", "list", data_dir=tmp_path)
    for secret in (first_admin, alice, worker, root):
        assert secret not in out and secret[:12] not in out
    rows = {r["PREFIX"]: r for r in _table(out)}
    assert [(rows[s[:11]]["USER"], rows[s[:11]]["KIND"]) for s in (first_admin, alice, worker,
                                                                    root)] == [
        ("admin", "admin"), ("alice", "user"), ("alice", "worker"), ("root", "admin")]
    assert all(re.fullmatch(r"[0-9a-f]{32}", r["ID"]) and
               re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", r["CREATED"])
               for r in rows.values())

    factory = make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'kiln.db'}"))
    # By id, and by the token itself: either is refused from then on.
    assert rows[alice[:11]]["ID"] in _cli("token", "revoke", rows[alice[:11]]["ID"],
                                          data_dir=tmp_path)
    _cli("token", "revoke", worker, data_dir=tmp_path)
    with session_scope(factory) as s:
        assert auth.authenticate(s, alice) is None and auth.authenticate(s, worker) is None
        assert auth.authenticate(s, root)[0].is_admin
    assert {r["USER"] for r in _table(_cli("token", "list", data_dir=tmp_path))} == \
        {"admin", "root"}

    # A lost admin token is replaced by root's; the last admin token is kept.
    _cli("token", "revoke", rows[first_admin[:11]]["ID"], data_dir=tmp_path)
    for ref in (root, "no-such-token"):
        refused = _run("token", "revoke", ref, data_dir=tmp_path)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines()[-1].startswith("kiln-server token revoke: ")
    assert "last admin token" in _run("token", "revoke", root, data_dir=tmp_path).stderr
    with session_scope(factory) as s:
        assert auth.authenticate(s, first_admin) is None
        assert auth.authenticate(s, root) is not None

    both = _run("token", "create", "--user", "x", "--worker", "--admin", data_dir=tmp_path)
    assert both.returncode == 2 and "not allowed with" in both.stderr
