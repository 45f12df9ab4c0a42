"""Compare: the jobs a person selects on the jobs page, overlaid on one set of charts."""

from __future__ import annotations

from .conftest import digits_spec, expect, screenshot, sign_in

EPOCHS = 6


def test_selected_jobs_are_overlaid(page, token, kiln, dataset):
    jobs = [kiln.jobs.submit_spec(digits_spec(dataset, name=f"batch-{size}", epochs=EPOCHS,
                                              batch_size=size)) for size in (16, 64)]
    for job in jobs:
        assert job.wait(progress=False, timeout=60).status == "succeeded"
    other = kiln.jobs.submit_spec(digits_spec(dataset, name="not-compared", epochs=EPOCHS))
    other.wait(progress=False, timeout=60)

    sign_in(page, token)
    compare = page.get_by_test_id("compare")
    expect(page.get_by_test_id("jobs-table")).to_have_attribute("data-total", "3")
    expect(compare).to_be_disabled()
    for job in jobs:
        row = page.locator(f"[data-testid=job-row][data-job-id='{job.id}']")
        expect(row).to_have_attribute("data-status", "succeeded")
        row.get_by_test_id("select-job").check()
    expect(compare).to_have_text("Compare (2)")
    compare.click()

    expect(page.get_by_test_id("compare-page")).to_be_visible()
    rows = page.get_by_test_id("compare-job")
    expect(rows).to_have_count(2)
    assert {rows.nth(i).get_attribute("data-job-id") for i in range(2)} == {j.id for j in jobs}
    for chart, x in (("compare-step-loss", "step"), ("compare-val-loss", "epoch"),
                     ("compare-val-accuracy", "epoch")):
        expect(page.locator(f"[data-testid={chart}] .u-legend .u-series .u-label")
               ).to_have_text([x, "batch-16", "batch-64"])
    expect(page.get_by_test_id("compare-val-loss")).to_have_attribute("data-points", str(EPOCHS))
    expect(page.get_by_test_id("compare-val-loss")).to_have_attribute("data-last-x", str(EPOCHS))
    steps = page.get_by_test_id("compare-step-loss")  # both jobs' steps, on one axis
    last_step = max(j.refresh().step for j in jobs)
    expect(steps).to_have_attribute("data-last-x", str(last_step))
    assert int(steps.get_attribute("data-points")) > 0
    screenshot(page, "compare")
