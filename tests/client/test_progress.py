"""What ``job.wait(progress=True)`` and ``kiln watch`` print where there is no terminal: a
line per epoch row, per control outcome and per status change, nothing twice."""

from __future__ import annotations

import io

from kiln_client import Event
from kiln_client._progress import WaitProgress


def test_lines_for_epochs_controls_and_each_status_change():
    out = io.StringIO()
    events = [
        Event("status", {"status": "queued", "epoch": 0}),
        Event("status", {"status": "running", "epoch": 0}),
        Event("steps", {"epoch": 1, "first_step": 1, "losses": [2.3, 2.1]}),
        Event("epoch", {"epoch": 1, "train_loss": 2.2, "val_loss": 2.0,
                        "metrics": {"val_accuracy": 0.5}, "learning_rates": {"": 0.003},
                        "frozen": []}),
        Event("status", {"status": "running", "epoch": 1}),
        Event("control", {"seq": 1, "kind": "freeze", "path": "layers.dec", "hyper": {},
                          "status": "applied", "applied_epoch": 2, "applied_step": 45}),
        Event("epoch", {"epoch": 2, "train_loss": 1.5, "metrics": {},
                        "learning_rates": {"layers.enc": 0.001, "layers.dec": 0.003},
                        "frozen": ["layers.dec"]}),
        Event("status", {"status": "failed", "epoch": 2, "error": "out of memory"}),
    ]
    with WaitProgress("0123456789abcdef", 3, file=out) as shown:
        for event in events:
            shown.on_event(event)
    assert out.getvalue().splitlines() == [
        "job 01234567  queued",
        "job 01234567  running",
        "job 01234567  epoch 1/3  train_loss 2.2  val_loss 2  val_accuracy 0.5  lr 0.003",
        "job 01234567  control 1 freeze layers.dec: applied at epoch 2, step 45",
        "job 01234567  epoch 2/3  train_loss 1.5  lr layers.enc=0.001 layers.dec=0.003  "
        "frozen layers.dec",
        "job 01234567  failed: out of memory",
    ]


def test_nothing_is_printed_when_disabled():
    out = io.StringIO()
    with WaitProgress("j", 1, enabled=False, file=out) as shown:
        shown.on_event(Event("status", {"status": "succeeded"}))
    assert out.getvalue() == ""
