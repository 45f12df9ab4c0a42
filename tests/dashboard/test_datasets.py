"""The datasets page: upload a .npz (its progress, then it is listed), delete one, and a
dataset an unfinished job uses is refused with the server's 409, shown as it says it."""

from __future__ import annotations

import numpy as np

from .conftest import digits_spec, expect, sign_in

#: The emulated link's upload speed: the 130 kB file then takes about a second.
UPLOAD_BYTES_PER_S = 128_000


def test_upload_with_progress_then_listed_and_delete(page, token, digits, tmp_path):
    path = tmp_path / "digits-small.npz"
    np.savez(path, x=digits["x"][:500], y=digits["y"][:500])
    size = path.stat().st_size

    sign_in(page, token, "#/datasets")
    expect(page.get_by_test_id("datasets-empty")).to_be_visible()
    page.get_by_test_id("upload-file").set_input_files(str(path))
    page.get_by_test_id("upload-name").fill("my digits")
    # a slow link (Chromium's network emulation), so that the upload takes about a second
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": UPLOAD_BYTES_PER_S})
    page.get_by_test_id("upload-submit").click()

    # part of the way: the bar's value is the bytes sent of the request (the file in a form)
    part = page.wait_for_function("""() => {
        const bar = document.querySelector('[data-testid=upload-progress]');
        return bar && bar.value > 0 && bar.value < bar.max ? [bar.value, bar.max] : false;
    }""", timeout=10_000).json_value()
    assert 0 < part[0] < part[1] and size < part[1] < size + 1000, (part, size)
    expect(page.get_by_test_id("upload-done")).to_have_text("Uploaded my digits.")
    progress = page.get_by_test_id("upload-progress")  # then full, and it stays
    expect(progress).to_have_attribute("value", str(part[1]))
    expect(progress).to_have_attribute("max", str(part[1]))
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    row = page.locator("[data-testid=dataset-row][data-name='my digits']")
    expect(row.get_by_test_id("dataset-name")).to_have_text("my digits")
    expect(row).to_contain_text("x float32 [500, 64]")
    expect(row).to_contain_text("y int64 [500]")

    row.get_by_test_id("delete-dataset").click()
    row.get_by_test_id("confirm-delete").click()
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("datasets-empty")).to_be_visible()
    page.reload()  # gone on the server too
    expect(page.get_by_test_id("datasets-empty")).to_be_visible()


def test_a_dataset_in_use_is_refused_as_the_server_says(page, live, token, kiln, dataset):
    job = kiln.jobs.submit_spec(digits_spec(dataset, epochs=10_000))
    job.pause()  # unfinished, and not holding the worker while the page is tried
    try:
        with live.client(token) as http:
            refused = http.delete(f"/v1/datasets/{dataset}")
        assert refused.status_code == 409, refused.text

        sign_in(page, token, "#/datasets")
        row = page.locator(f"[data-testid=dataset-row][data-dataset-id='{dataset}']")
        row.get_by_test_id("delete-dataset").click()
        row.get_by_test_id("confirm-delete").click()
        error = page.locator(f"[data-testid=dataset-error][data-dataset-id='{dataset}']")
        expect(error.get_by_role("alert")).to_have_text(refused.json()["detail"])
        expect(row).to_be_visible()  # still there: on the page and on the server
        page.reload()
        expect(row.get_by_test_id("dataset-name")).to_have_text("digits")
    finally:
        job.cancel()
