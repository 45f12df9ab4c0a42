"""Fixtures of the dashboard's browser tests: one real ``kiln-server`` (SQLite, on
127.0.0.1) serving the built dashboard, with one real worker process, for the whole
session; a user of each test's own; a Chromium page per test (conftest's ``browser``).

The dashboard must be built (``make dashboard``; ``make test`` builds it first): without
the build these tests fail, saying so, rather than skip. Screenshots go to the folder
``$KILN_SCREENSHOTS`` names, else ``test-artifacts/screenshots/`` at the repository root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kiln_server
import numpy as np
import pytest
from kiln_client import Client

from tests.server.conftest import Server, mlp_job

try:
    from playwright.sync_api import expect
except ImportError:  # conftest's ``browser`` skips the tests (fails them in CI) before use
    expect = None
from tests.server.e2e_support import Workers, digits_split, new_client

ROOT = Path(__file__).resolve().parents[2]
#: Where `npm run build` writes the dashboard: the server package's data.
DASHBOARD_DIR = Path(kiln_server.__file__).parent / "dashboard"
SCREENSHOTS = Path(os.environ.get("KILN_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
#: Wide enough for the jobs table's every column, tall enough for a job page's charts.
VIEWPORT = {"width": 1280, "height": 900}
#: How long a browser assertion waits for the page (Playwright's auto-waiting expect).
EXPECT_MS = 20_000


@pytest.fixture(scope="session")
def dashboard_dir() -> Path:
    """The built dashboard; a failure (not a skip) while it is missing."""
    if not (DASHBOARD_DIR / "index.html").is_file():
        pytest.fail(f"the dashboard is not built ({DASHBOARD_DIR}/index.html is missing): "
                    "run `make dashboard` (or `cd dashboard && npm ci && npm run build`)")
    return DASHBOARD_DIR


@pytest.fixture(scope="session")
def live(dashboard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The session's server serving the build, with one worker process logging beside it."""
    root = tmp_path_factory.mktemp("kiln-dashboard")
    server = Server(root, env={"KILN_DASHBOARD_DIR": str(dashboard_dir)})
    _, worker_token = new_client(server, worker=True)
    workers = Workers(server, worker_token, root)
    workers.start(1)
    yield server
    workers.stop()
    server.stop()


@pytest.fixture
def token(live: Server) -> str:
    """The token of a new user of this test's own."""
    return new_client(live)[1]


@pytest.fixture
def kiln(live: Server, token: str) -> Iterator[Client]:
    """The SDK, signed in as the test's user."""
    with Client(live.url, token) as client:
        yield client


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    return digits_split()


@pytest.fixture
def dataset(kiln: Client, digits: dict[str, np.ndarray]) -> str:
    """The digits, uploaded by the test's user: its id."""
    return kiln.datasets.upload("digits", **digits).id


def digits_spec(dataset: str, **changes: Any) -> dict[str, Any]:
    """Chain(enc=Dense(64->32, relu), dec=Dense(32->10)) with Adam(0.003) on the digits,
    validated on the held-out part; no early stop."""
    spec = mlp_job(dataset, validation={"dataset": dataset, "x": "xv", "y": "yv"},
                   optimiser={"rule": "Adam", "eta": 0.003}, seed=3, stop=None)
    spec.update(changes)
    return spec


@pytest.fixture
def page(live: Server, browser: Any) -> Iterator[Any]:
    """A fresh page (its own storage) on the server; the test fails if a script on it
    throws."""
    expect.set_options(timeout=EXPECT_MS)
    context = browser.new_context(viewport=VIEWPORT, base_url=live.url)
    pg = context.new_page()
    thrown: list[str] = []
    pg.on("pageerror", lambda e: thrown.append(str(e)))
    yield pg
    context.close()
    assert not thrown, f"the page threw: {thrown}"


def sign_in(page: Any, token: str, hash_: str = "#/jobs") -> None:
    """Sign in through the form, as a person does, and land on ``hash_``."""
    page.goto("/" + hash_)
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("user-name")).to_be_visible()


def screenshot(page: Any, name: str) -> Path:
    """A PNG of the whole page under SCREENSHOTS."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def rises(page: Any, selector: str, past: float, attribute: str | None = None) -> float:
    """Wait until the first number in the element ``selector`` finds (in ``attribute``, else
    its text) is above ``past``, the page updating by itself; return it."""
    handle = page.wait_for_function("""([selector, attribute, past]) => {
        const el = document.querySelector(selector);
        const text = el && (attribute ? el.getAttribute(attribute) : el.textContent);
        const m = text?.match(/-?\\d+(\\.\\d+)?/);
        return m && Number(m[0]) > past ? Number(m[0]) : false;
    }""", arg=[selector, attribute, past], timeout=EXPECT_MS)
    return handle.json_value()
