"""docker-compose.yml, checked without Docker's daemon: Docker Compose's own validation,
and what it names against the code: kiln-server's commands and flags (its argparse
parser), the settings (every KILN_* variable), the Dockerfile's and the proxy's ports,
the services it points at, and the order things start in."""

from __future__ import annotations

import re
import shlex
import subprocess
from urllib.parse import urlsplit

import pytest
from kiln_server import cli
from kiln_server.settings import Settings

from .tools import ROOT, compose_file, dockerfile, tool

REQUIRED = {"KILN_ADMIN_TOKEN": "a" * 32, "MINIO_ROOT_PASSWORD": "b" * 32}


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``docker compose ARGS`` on the repository's file, with no .env file read."""
    empty = ROOT / "docker-compose.yml"  # any file without assignments stands for .env
    return subprocess.run(
        [tool("docker-compose"), "--project-directory", str(ROOT), "-f",
         str(ROOT / "docker-compose.yml"), "--env-file", "/dev/null", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(empty.parent), **(env or {})})


def kiln_services() -> dict[str, dict]:
    """The services that run the Kiln image (its entrypoint is ``kiln-server``)."""
    return {name: s for name, s in compose_file()["services"].items()
            if s.get("image", "").startswith("kiln:")}


def parse(command: list[str]):
    """``kiln-server COMMAND`` as kiln-server's own parser reads it (fails if it refuses)."""
    try:
        return cli._parser().parse_args(command)
    except SystemExit:
        pytest.fail(f"kiln-server refuses {shlex.join(command)!r}")


def caddyfile() -> str:
    return (ROOT / "deploy" / "Caddyfile").read_text()


def test_docker_compose_validates_the_file():
    r = compose("config", "--quiet", env=REQUIRED)
    assert r.returncode == 0, r.stderr
    r = compose("config", "--services", env=REQUIRED)
    assert set(r.stdout.split()) == {"postgres", "minio", "buckets", "migrate", "api",
                                     "proxy", "worker"}
    r = compose("--profile", "cpu", "config", "--services", env=REQUIRED)
    assert "worker-cpu" in r.stdout.split()


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_secret_stops_compose_naming_it(missing):
    r = compose("config", "--quiet", env={k: v for k, v in REQUIRED.items() if k != missing})
    assert r.returncode != 0 and missing in r.stderr


def test_every_kiln_variable_it_names_is_a_setting_or_the_workers():
    prefix = Settings.model_config["env_prefix"]
    settings = {prefix + name.upper() for name in Settings.model_fields}
    # the worker's own (not settings: a worker reads no server configuration)
    worker = set(re.findall(r'"(KILN_[A-Z0-9_]+)"', (ROOT / "server/kiln_server/cli.py")
                            .read_text()))
    named = set(re.findall(r"\bKILN_[A-Z0-9_]+", (ROOT / "docker-compose.yml").read_text()))
    assert named and named <= settings | worker, named - settings - worker


def test_the_kiln_services_commands_are_kiln_servers():
    services = kiln_services()
    assert set(services) == {"migrate", "api", "worker", "worker-cpu"}
    for service in services.values():
        parse(service["command"])
    assert parse(services["migrate"]["command"]).run is cli._migrate
    api = parse(services["api"]["command"])
    assert (api.run, api.host, api.workers) == (cli._serve, "0.0.0.0", 0)
    assert parse(services["worker"]["command"]).gpus == "all"
    assert parse(services["worker-cpu"]["command"]).device == "cpu"
    assert ["ENTRYPOINT", '["kiln-server"]'] in [list(i) for i in dockerfile()]


def test_ports_and_hosts_line_up_with_the_image_and_the_proxy():
    services = compose_file()["services"]
    port = parse(services["api"]["command"]).port
    instructions = dict(dockerfile())  # the last of each keyword: the runtime stage's
    assert instructions["EXPOSE"] == str(port)
    assert f"http://127.0.0.1:{port}/healthz" in instructions["HEALTHCHECK"]
    assert str(port) in services["api"]["expose"]
    upstream = re.search(r"dynamic a \{\$API_HOST:(\w+)\} \{\$API_PORT:(\d+)\}", caddyfile())
    assert upstream and upstream.groups() == ("api", str(port))
    listen = re.search(r"^:\{\$PROXY_PORT:(\d+)\} \{", caddyfile(), flags=re.M).group(1)
    assert services["proxy"]["ports"] == [f"8000:{listen}"]
    for name in ("worker", "worker-cpu"):
        url = urlsplit(parse(services[name]["command"]).url)
        assert (url.hostname, url.port) == ("proxy", int(listen)), name


def test_the_server_reaches_postgres_and_minio_and_the_bucket_exists():
    services = compose_file()["services"]
    env = services["api"]["environment"]
    assert env == services["migrate"]["environment"]
    assert urlsplit(env["KILN_DATABASE_URL"]).hostname == "postgres"
    postgres = services["postgres"]["environment"]
    assert urlsplit(env["KILN_DATABASE_URL"]).path == "/" + postgres["POSTGRES_DB"]
    assert urlsplit(env["KILN_S3_ENDPOINT_URL"]).hostname == "minio"
    bucket = urlsplit(env["KILN_BLOB_STORE"]).hostname
    assert f"mc mb --ignore-existing minio/{bucket}" in " ".join(services["buckets"]["command"])


def test_the_schema_is_migrated_once_before_any_replica_serves():
    services = compose_file()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"]["volumes"] == ["postgres:/var/lib/postgresql/data"]
    depends = services["api"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["buckets"]["condition"] == "service_completed_successfully"
    assert services["api"]["deploy"]["replicas"] >= 2


def test_workers_gpu_and_cpu():
    services = kiln_services()
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["worker"]["build"]["args"]["VARIANT"] == "gpu"
    cpu = services["worker-cpu"]
    assert (cpu["profiles"], cpu["build"]["args"]["VARIANT"]) == (["cpu"], "cpu")
    assert "deploy" not in cpu
    for name in ("worker", "worker-cpu", "migrate"):  # the image's check is serve's port
        assert services[name]["healthcheck"] == {"disable": True}, name
    for name in ("worker", "worker-cpu"):
        assert "KILN_WORKER_TOKEN" in services[name]["environment"]
