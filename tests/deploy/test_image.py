"""The Dockerfile, checked without Docker's daemon: hadolint, the paths it copies, its
stages and variants, its command, and the server as the image installs it (a wheel, not
the repository) migrating a database with the migrations it carries."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from kiln_server import cli

from .tools import ROOT, dockerfile, tool

#: The Python of each runtime base (the wheels are built for one Python only).
BASE_PYTHON = {"python:3.12-slim": "3.12", "ubuntu24.04": "3.12", "ubuntu22.04": "3.10"}


def stages() -> dict[str, str]:
    """Each stage's name: its base image."""
    return {m.group(2): m.group(1) for kw, args in dockerfile() if kw == "FROM"
            if (m := re.fullmatch(r"(\S+) AS (\S+)", args))}


def args() -> dict[str, str]:
    return dict(a.split("=", 1) for kw, a in dockerfile() if kw == "ARG" and "=" in a)


def test_hadolint_passes():
    r = subprocess.run([tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_what_it_copies_is_in_the_build_context():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1:2] == ["*"] or "*" in ignore  # an allowlist: only what is named goes
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copies = [a.split() for kw, a in dockerfile() if kw == "COPY" and "--from" not in a]
    assert copies
    for *sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert PurePosixPath(source).parts[0] in allowed, source


def test_stages_variants_and_bases():
    named = stages()
    for kw, a in dockerfile():
        if kw == "COPY" and (m := re.match(r"--from=(\S+)", a)):
            assert m.group(1) in named, a
    assert args()["VARIANT"] == "gpu"
    assert ("FROM", "runtime-${VARIANT}") in dockerfile()
    assert {"runtime-gpu", "runtime-cpu"} <= set(named)
    cuda = args()["CUDA_IMAGE"]
    assert named["runtime-gpu"] == "${CUDA_IMAGE}" and "-runtime-" in cuda
    # CuPy's wheel is built for the CUDA major version of the runtime
    engine = tomllib.loads((ROOT / "engine/pyproject.toml").read_text())
    cuda_major = re.match(r"nvidia/cuda:(\d+)\.", cuda).group(1)
    assert engine["project"]["optional-dependencies"]["gpu"][0].startswith(
        f"cupy-cuda{cuda_major}x")
    # the wheels' Python is each runtime's
    python = BASE_PYTHON[named["wheels"]]
    assert BASE_PYTHON[named["runtime-cpu"]] == python
    assert BASE_PYTHON[cuda.rsplit("-", 1)[1]] == python
    server = tomllib.loads((ROOT / "server/pyproject.toml").read_text())
    assert server["project"]["requires-python"] == ">=3.11" and python >= "3.11"


def test_the_dashboard_stage_builds_where_the_next_stage_copies_from():
    workdir = next(a for kw, a in dockerfile() if kw == "WORKDIR")
    out = re.search(r'outDir: "([^"]+)"', (ROOT / "dashboard/vite.config.ts").read_text())
    built = os.path.normpath(PurePosixPath(workdir) / out.group(1))
    copy = next(a.split() for kw, a in dockerfile() if kw == "COPY" and "--from=dashboard" in a)
    assert copy[1].rstrip("/") == built


def test_it_runs_kiln_server_as_a_user_with_a_healthcheck():
    instructions = dict(dockerfile())
    assert instructions["USER"].split(":")[0] not in ("root", "0")
    assert instructions["ENTRYPOINT"] == '["kiln-server"]'
    script = tomllib.loads((ROOT / "server/pyproject.toml").read_text())["project"]["scripts"]
    assert script["kiln-server"] == "kiln_server.cli:main"
    command = re.findall(r'"([^"]*)"', instructions["CMD"])
    served = cli._parser().parse_args(command)
    assert (served.run, served.host) == (cli._serve, "0.0.0.0")
    assert instructions["VOLUME"] == "/data" and "KILN_DATA_DIR=/data" in instructions["ENV"]
    assert f"127.0.0.1:{served.port}/healthz" in instructions["HEALTHCHECK"]


@pytest.mark.slow
def test_the_installed_server_migrates_with_the_migrations_it_carries(tmp_path):
    """The image installs the server from a wheel: the migrations go in it (package data),
    and `kiln-server migrate` run from it finds them."""
    src, wheels = tmp_path / "src", tmp_path / "wheels"  # as the image's build stage has it
    shutil.copytree(ROOT / "server", src / "server", symlinks=True, ignore=shutil.
                    ignore_patterns("build", "*.egg-info", "__pycache__", "dashboard"))
    shutil.copytree(ROOT / "migrations", src / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(src / "server")],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("kiln_server-*.whl")
    with zipfile.ZipFile(wheel) as z:
        carried = {n for n in z.namelist() if n.startswith("kiln_server/migrations/")}
        z.extractall(tmp_path / "site")
    versions = {f"kiln_server/migrations/versions/{p.name}"
                for p in (ROOT / "migrations/versions").glob("*.py")}
    assert versions and versions <= carried
    assert {"kiln_server/migrations/env.py", "kiln_server/migrations/script.py.mako"} <= carried
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = [sys.executable, "-c", "import kiln_server, sys; print(kiln_server.__file__); "
           "sys.argv[0] = 'kiln-server'; from kiln_server.cli import main; "
           "sys.exit(main(['migrate', '--data-dir', 'data']))"]
    r = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.splitlines()[0]).is_relative_to(tmp_path / "site")  # not the repo
    with sqlite3.connect(tmp_path / "data" / "kiln.db") as db:
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == max(p.name.split("_")[0] for p in (ROOT / "migrations/versions")
                          .glob("*.py"))
