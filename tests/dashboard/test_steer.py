"""A person watches a job they submit train, and steers it from its page: the job appears
on the jobs page and its charts grow; a learning rate set on ``layers.enc`` from the model
tree is applied (the control history, a marker on the charts, the new rate in that epoch's
row); a wrong value is refused with the server's words; ``layers.enc`` is frozen and
thawed; the workers page shows the worker holding the job; the job is paused, resumed and
cancelled (a rate set while it is paused is pending until it trains again). Screenshots
of the jobs page, the running job's page and the workers page are taken along the way."""

from __future__ import annotations

import re

from .conftest import digits_spec, expect, rises, screenshot, sign_in

#: Batches of 4 of the 1,400 digits: about 350 steps an epoch, a few epochs a second
#: here, so that each change shows in an epoch row within a second.
STEERED = {"name": "steered", "batch_size": 4, "epochs": 10_000}
APPLIED = re.compile(r"^applied at epoch (\d+), step (\d+)$")


def _applied(row) -> tuple[int, int]:
    """A control row's outcome once applied: (epoch, step)."""
    outcome = row.get_by_test_id("control-outcome")
    expect(outcome).to_have_text(APPLIED)
    epoch, step = APPLIED.match(outcome.inner_text()).groups()
    return int(epoch), int(step)


def test_watch_and_steer_a_running_job(page, live, token, kiln, dataset):
    sign_in(page, token)
    expect(page.get_by_test_id("jobs-empty")).to_be_visible()
    job = kiln.jobs.submit_spec(digits_spec(dataset, **STEERED))
    try:
        _watch_on_the_jobs_page(page, kiln, job)
        _watch_its_charts_grow(page, job)
        _set_a_learning_rate_from_the_tree(page, live, token, kiln, job)
        _freeze_and_thaw(page)
        screenshot(page, "job-running")
        _see_the_worker_hold_it(page, kiln, job)
        _pause_resume_cancel(page, job)
    finally:
        if kiln.jobs.get(job.id).status not in ("succeeded", "failed", "cancelled"):
            job.cancel()


def _watch_on_the_jobs_page(page, kiln, job) -> None:
    """It appears by itself (the jobs stream), starts, and its progress moves."""
    row = page.locator(f"[data-testid=job-row][data-job-id='{job.id}']")
    expect(row).to_have_attribute("data-status", "running")
    expect(row.get_by_test_id("job-link")).to_have_text("steered")
    expect(row.get_by_test_id("job-train-loss")).to_have_text(re.compile(r"^\d"))
    expect(row.get_by_test_id("job-val-loss")).to_have_text(re.compile(r"^\d"))
    [worker] = [w for w in kiln.workers.list() if w.status != "gone"]
    expect(row.get_by_test_id("job-worker")).to_have_text(worker.name)
    progress = f"[data-job-id='{job.id}'] [data-testid=job-progress]"
    rises(page, progress, rises(page, progress, 0))
    expect(row.get_by_test_id("job-progress")).to_have_text(re.compile(r"^\d+ / 10000$"))

    page.get_by_test_id("filter-running").click()
    expect(page.get_by_test_id("filter-running")).to_have_attribute("aria-current", "true")
    expect(row).to_be_visible()
    page.get_by_test_id("filter-succeeded").click()
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("jobs-empty")).to_have_text("No succeeded jobs.")
    page.get_by_test_id("filter-all").click()
    expect(row).to_be_visible()
    screenshot(page, "jobs")
    row.get_by_test_id("job-link").click()


def _watch_its_charts_grow(page, job) -> None:
    expect(page).to_have_url(re.compile(f"#/jobs/{job.id}"))
    expect(page.get_by_test_id("job-page")).to_have_attribute("data-status", "running")
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    expect(page.get_by_test_id("job-device")).to_have_text("any: CPU or GPU")
    steps = "[data-testid=chart-step-loss]"
    rises(page, steps, rises(page, steps, 0, "data-last-x"), "data-last-x")
    assert int(page.locator(steps).get_attribute("data-points")) > 0
    epochs = "[data-testid=chart-epoch-loss]"
    rises(page, epochs, rises(page, epochs, 1, "data-points"), "data-points")
    expect(page.get_by_test_id("epoch-row").first).to_be_visible()


def _set_a_learning_rate_from_the_tree(page, live, token, kiln, job) -> None:
    """A negative rate is refused with the server's message for hyper.eta; 0.0005 is
    applied: the history says where, the charts mark it, that epoch's row has it."""
    node = page.locator("[data-testid=tree-node][data-path='layers.enc']")
    expect(node.get_by_test_id("tree-node-eta")).to_have_text("η 0.003")
    node.get_by_test_id("tree-node-select").click()
    panel = page.get_by_test_id("subtree-panel")
    expect(panel).to_have_attribute("data-path", "layers.enc")
    expect(panel.get_by_test_id("subtree-eta")).to_have_text("0.003")
    expect(panel.get_by_test_id("hyper-name")).to_have_value("eta")

    with live.client(token) as http:  # what the server says of it
        refused = http.post(f"/v1/jobs/{job.id}/controls", json={
            "kind": "adjust", "path": "layers.enc", "hyper": {"eta": -0.1}})
    assert refused.status_code == 422, refused.text
    [field] = refused.json()["detail"]
    assert field["loc"] == ["body", "hyper", "eta"], field
    panel.get_by_test_id("hyper-value").fill("-0.1")
    panel.get_by_test_id("apply-hyper").click()
    expect(panel.get_by_test_id("error")).to_have_text(f"hyper.eta: {field['msg']}")
    expect(page.get_by_test_id("controls-empty")).to_be_visible()  # nothing was sent

    panel.get_by_test_id("hyper-value").fill("0.0005")
    panel.get_by_test_id("apply-hyper").click()
    expect(panel.get_by_test_id("error")).to_have_count(0)
    row = page.locator("[data-testid=control-row][data-kind=adjust]")
    expect(row.get_by_test_id("control-label")).to_have_text("eta → 0.0005 on layers.enc")
    epoch, step = _applied(row)
    seq = row.get_attribute("data-seq")
    [control] = [c for c in kiln.jobs.get(job.id).controls() if str(c.seq) == seq]
    assert (control.applied_epoch, control.applied_step) == (epoch, step)

    for chart in ("chart-step-loss", "chart-learning-rate"):
        marker = page.locator(f"[data-testid={chart}] [data-testid=chart-marker][data-key='{seq}']")
        expect(marker).to_have_attribute("data-x", str(step))
        expect(marker).to_have_attribute("title", "eta → 0.0005 on layers.enc")
    expect(page.locator(f"[data-testid=chart-epoch-loss] [data-testid=chart-marker]"
                        f"[data-key='{seq}']")).to_have_count(1)

    rates = page.locator(f"[data-testid=epoch-row][data-epoch='{epoch}'] .rate")
    expect(rates).to_have_text(["layers.enc 0.0005", "layers.dec 0.003"])
    expect(page.locator(f"[data-testid=epoch-row][data-epoch='{epoch - 1}'] .rate")
           ).to_have_text(["all 0.003"])
    expect(node.get_by_test_id("tree-node-eta")).to_have_text("η 0.0005")
    expect(panel.get_by_test_id("subtree-eta")).to_have_text("0.0005")
    # the rate chart: one series for the model's rate before, one per subtree after
    legend = page.locator("[data-testid=chart-learning-rate] .u-legend .u-series .u-label")
    expect(legend).to_have_count(4)
    assert sorted(legend.all_inner_texts()) == ["layers.dec", "layers.enc", "step", "the model"]


def _freeze_and_thaw(page) -> None:
    """``layers.enc`` (selected) frozen: the tree and the rows from that epoch say so;
    thawed: no longer."""
    node = page.locator("[data-testid=tree-node][data-path='layers.enc']")
    root = page.locator("[data-testid=tree-node][data-path='']")
    panel = page.get_by_test_id("subtree-panel")
    expect(panel).to_have_attribute("data-path", "layers.enc")
    expect(node).to_have_attribute("data-frozen", "none")

    panel.get_by_test_id("freeze").click()
    frozen_at, _ = _applied(page.locator("[data-testid=control-row][data-kind=freeze]"))
    expect(node).to_have_attribute("data-frozen", "all")
    expect(node.get_by_test_id("tree-node-frozen")).to_have_text("frozen")
    expect(root).to_have_attribute("data-frozen", "some")
    expect(panel.get_by_test_id("subtree-frozen")).to_have_text("yes")
    row = page.locator(f"[data-testid=epoch-row][data-epoch='{frozen_at}']")
    expect(row.get_by_test_id("epoch-frozen")).to_have_text("layers.enc")
    expect(page.locator(f"[data-testid=epoch-row][data-epoch='{frozen_at - 1}'] "
                        "[data-testid=epoch-frozen]")).to_have_text("–")

    panel.get_by_test_id("thaw").click()
    thawed_at, _ = _applied(page.locator("[data-testid=control-row][data-kind=thaw]"))
    assert thawed_at > frozen_at
    expect(node).to_have_attribute("data-frozen", "none")
    expect(root).to_have_attribute("data-frozen", "none")
    expect(panel.get_by_test_id("subtree-frozen")).to_have_text("no")
    row = page.locator(f"[data-testid=epoch-row][data-epoch='{thawed_at}']")
    expect(row.get_by_test_id("epoch-frozen")).to_have_text("–")
    expect(page.locator(f"[data-testid=epoch-row][data-epoch='{thawed_at - 1}'] "
                        "[data-testid=epoch-frozen]")).to_have_text("layers.enc")
    expect(page.locator("[data-testid=chart-step-loss] [data-testid=chart-marker]")
           ).to_have_count(3)


def _see_the_worker_hold_it(page, kiln, job) -> None:
    """The workers page shows the worker, busy with this job, whose link leads back."""
    [worker] = [w for w in kiln.workers.list() if w.status != "gone"]
    page.get_by_test_id("nav-workers").click()
    row = page.locator(f"[data-testid=worker-row][data-worker-id='{worker.id}']")
    expect(row).to_have_attribute("data-status", "busy")
    expect(row.get_by_test_id("worker-name")).to_have_text(worker.name)
    expect(row.get_by_test_id("worker-device")).to_contain_text(worker.device["kind"])
    expect(row.get_by_test_id("worker-job")).to_have_text(job.id[:8])
    expect(row.get_by_test_id("worker-heartbeat")).to_have_text(re.compile(r"^\d+ s ago$"))
    screenshot(page, "workers")
    row.get_by_test_id("worker-job").click()
    expect(page.get_by_test_id("job-page")).to_have_attribute("data-job-id", job.id)


def _pause_resume_cancel(page, job) -> None:
    job_page = page.get_by_test_id("job-page")
    expect(job_page).to_have_attribute("data-status", "running")
    page.get_by_test_id("pause").click()
    expect(job_page).to_have_attribute("data-status", "paused")
    expect(page.get_by_test_id("job-status")).to_have_text("paused")
    expect(page.get_by_test_id("pause")).to_be_disabled()
    paused_at = int(page.get_by_test_id("job-step").inner_text().split()[0])

    # a rate set while it is paused stays pending until it trains again
    node = page.locator("[data-testid=tree-node][data-path='layers.dec']")
    node.get_by_test_id("tree-node-select").click()
    panel = page.get_by_test_id("subtree-panel")
    expect(panel).to_have_attribute("data-path", "layers.dec")
    panel.get_by_test_id("hyper-value").fill("0.001")
    panel.get_by_test_id("apply-hyper").click()
    row = page.locator("[data-testid=control-row][data-kind=adjust]").first
    expect(row.get_by_test_id("control-label")).to_have_text("eta → 0.001 on layers.dec")
    expect(row).to_have_attribute("data-status", "pending")
    expect(row.get_by_test_id("control-outcome")).to_have_text("pending")
    expect(node.locator(".badge.pending")).to_have_text("pending")
    expect(panel.get_by_test_id("subtree-control").first).to_have_attribute("data-status",
                                                                            "pending")

    page.get_by_test_id("resume").click()
    expect(job_page).to_have_attribute("data-status", "running")
    assert _applied(row)[1] == paused_at + 1  # the first step after the resume
    expect(panel.get_by_test_id("subtree-control").first).to_have_attribute("data-status",
                                                                            "applied")
    expect(node.locator(".badge.pending")).to_have_count(0)
    expect(node.get_by_test_id("tree-node-eta")).to_have_text("η 0.001")
    steps = "[data-testid=chart-step-loss]"
    rises(page, steps, float(page.locator(steps).get_attribute("data-last-x")), "data-last-x")

    page.get_by_test_id("cancel").click()
    expect(job_page).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_test_id("stream-state")).to_have_text("finished")
    for button in ("pause", "resume", "cancel", "apply-hyper", "freeze", "thaw"):
        expect(page.get_by_test_id(button)).to_be_disabled()
    page.get_by_test_id("nav-jobs").click()
    expect(page.locator(f"[data-testid=job-row][data-job-id='{job.id}']")
           ).to_have_attribute("data-status", "cancelled")


def test_a_job_that_asks_for_a_gpu_says_so_while_it_waits_for_one(page, token, kiln, dataset):
    """The session's only worker trains on the CPU: the job stays queued, and its page
    says what it waits for."""
    job = kiln.jobs.submit_spec(digits_spec(dataset, name="on a gpu", device="gpu"))
    try:
        sign_in(page, token, f"#/jobs/{job.id}")
        expect(page.get_by_test_id("job-page")).to_have_attribute("data-status", "queued")
        expect(page.get_by_test_id("job-device")).to_have_text("a GPU")
    finally:
        job.cancel()
