"""The server serves the built dashboard at / and /assets/ (from KILN_DASHBOARD_DIR, here a
temporary directory), says at / and on start how to build it while it is missing, and
leaves every other unknown path a JSON 404."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Server

INDEX = '<!doctype html><html><head><script type="module" src="/assets/index-4f2a.js">' \
        '</script><link rel="stylesheet" href="/assets/index-9c1e.css"></head>' \
        '<body><div id="app"></div></body></html>'
#: A module script runs only if served with a JavaScript type: the browser test checks it.
SCRIPT = 'document.getElementById("app").textContent = "built";\n'


def _build(directory) -> None:
    """What `npm run build` leaves: index.html and hashed assets."""
    (directory / "assets").mkdir(parents=True)
    (directory / "index.html").write_text(INDEX)
    (directory / "assets" / "index-4f2a.js").write_text(SCRIPT)
    (directory / "assets" / "index-9c1e.css").write_text("body { margin: 0 }\n")


@pytest.fixture
def dashboard_server(tmp_path):
    """A server whose dashboard directory is empty: its build comes during the test."""
    made: list[Server] = []

    def start(built: bool) -> Server:
        directory = tmp_path / f"dashboard-{len(made)}"
        if built:
            _build(directory)
        (tmp_path / f"data-{len(made)}").mkdir()
        made.append(Server(tmp_path / f"data-{len(made)}",
                           env={"KILN_DASHBOARD_DIR": str(directory)}))
        made[-1].dashboard_dir = directory
        return made[-1]
    yield start
    for s in made:
        s.stop()


def test_without_a_build_the_page_and_the_start_say_how_to_build_it(dashboard_server):
    server = dashboard_server(built=False)
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "make dashboard" in page.text and "cd dashboard &amp;&amp; npm ci &amp;&amp; npm " \
        "run build" in page.text and "not built" in page.text
    log = (server.data_dir / "server.log").read_text()
    assert "Dashboard: not built" in log and "make dashboard" in log
    assert "Dashboard: http" not in log
    missing = httpx.get(server.url + "/assets/index-4f2a.js")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})

    _build(server.dashboard_dir)  # built while the server runs: served from now on
    page = httpx.get(server.url + "/")
    assert (page.status_code, page.text) == (200, INDEX)
    assert page.headers["cache-control"] == "no-cache"


def test_the_build_is_served_without_a_token_and_assets_are_cached(dashboard_server):
    server = dashboard_server(built=True)
    log = (server.data_dir / "server.log").read_text()
    assert f"Dashboard: {server.url}/" in log
    page = httpx.get(server.url + "/")
    assert (page.status_code, page.text) == (200, INDEX)
    assert page.headers["content-type"].startswith("text/html")
    assert httpx.head(server.url + "/").status_code == 200
    script = httpx.get(server.url + "/assets/index-4f2a.js")
    assert script.status_code == 200 and script.text == SCRIPT
    assert script.headers["content-type"].split(";")[0] in ("text/javascript",
                                                            "application/javascript")
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    style = httpx.get(server.url + "/assets/index-9c1e.css")
    assert style.headers["content-type"].startswith("text/css")
    again = httpx.get(server.url + "/assets/index-4f2a.js",
                      headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304


def test_other_paths_stay_json_404s(dashboard_server):
    server = dashboard_server(built=True)
    for path in ("/assets/nothing.js", "/assets/%2e%2e/index.html", "/assets/",
                 "/index.html", "/nope", "/v1/nope"):
        r = httpx.get(server.url + path)
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}, path


def test_a_browser_runs_the_served_page(dashboard_server, browser):
    """Chromium loads / and runs its module script from /assets (which it refuses when
    served with a type that is not JavaScript's) and applies its stylesheet."""
    server = dashboard_server(built=True)
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('app').textContent === 'built'",
                               timeout=10_000)
        assert page.evaluate("getComputedStyle(document.body).margin") == "0px"
    finally:
        page.close()
