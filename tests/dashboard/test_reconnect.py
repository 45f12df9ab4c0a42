"""A dropped stream reconnects by itself, and the page says so while it is down: the jobs
page of a server that stops shows "reconnecting…", and once the server is back (same
data, same port) it is live again and shows a job submitted meanwhile."""

from __future__ import annotations

from kiln_client import Client

from tests.server import conftest as server_conftest
from tests.server.e2e_support import digits_split, new_client

from .conftest import EXPECT_MS, VIEWPORT, digits_spec, expect, sign_in


def test_a_dropped_stream_says_so_and_comes_back(browser, dashboard_dir, tmp_path):
    env = {"KILN_DASHBOARD_DIR": str(dashboard_dir)}
    server = server_conftest.Server(tmp_path, env=env)
    context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
    try:
        _, token = new_client(server)
        with Client(server.url, token) as kiln:
            dataset = kiln.datasets.upload("digits", **digits_split()).id
            kiln.jobs.submit_spec(digits_spec(dataset, name="before"))
        page = context.new_page()
        expect.set_options(timeout=EXPECT_MS)
        sign_in(page, token)
        state = page.get_by_test_id("stream-state")
        expect(state).to_have_attribute("data-state", "open")
        expect(page.get_by_test_id("job-row")).to_have_count(1)

        server.stop()
        expect(state).to_have_attribute("data-state", "reconnecting")
        expect(state).to_have_text("reconnecting…")

        # the same data and port
        server = server_conftest.Server(tmp_path, env=env, port=server.port)
        expect(state).to_have_attribute("data-state", "open")
        with Client(server.url, token) as kiln:
            kiln.jobs.submit_spec(digits_spec(dataset, name="after"))
        expect(page.get_by_test_id("job-row")).to_have_count(2)
        expect(page.get_by_test_id("job-link").first).to_have_text("after")
    finally:
        context.close()
        server.stop()
