"""How a job's progress reads to a person: one line per epoch row and per control, and
the live bar that ``job.wait(progress=True)`` and ``kiln watch`` show.

On a terminal the bar redraws in place (Rich); anywhere else (a log file, CI) each epoch
and each control is printed as a line of its own, so the record stays readable.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ._types import Event

__all__ = ["WaitProgress", "format_control", "format_epoch", "format_number"]


def format_number(v: Any) -> str:
    """A loss or metric in 4 significant digits; '-' for none."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _rates(rates: dict[str, float]) -> str:
    if not rates:
        return ""
    values = set(rates.values())
    if len(values) == 1:
        return f"lr {format_number(values.pop())}"
    return "lr " + " ".join(f"{p or '(all)'}={format_number(v)}" for p, v in rates.items())


def format_epoch(row: dict[str, Any], total: int | None = None) -> str:
    """``epoch 3/30  train_loss 0.1234  val_loss 0.2  val_accuracy 0.95  lr 0.003``."""
    epoch = f"epoch {row['epoch']}" + (f"/{total}" if total else "")
    parts = [epoch, f"train_loss {format_number(row.get('train_loss'))}"]
    if row.get("val_loss") is not None:
        parts.append(f"val_loss {format_number(row['val_loss'])}")
    parts += [f"{k} {format_number(v)}" for k, v in (row.get("metrics") or {}).items()
              if k not in ("train_loss", "val_loss")]
    if rates := _rates(row.get("learning_rates") or {}):
        parts.append(rates)
    if row.get("frozen"):
        parts.append("frozen " + ",".join(p or "(all)" for p in row["frozen"]))
    if row.get("skipped_steps"):
        parts.append(f"skipped {row['skipped_steps']} steps")
    return "  ".join(parts)


def format_control(c: dict[str, Any]) -> str:
    """``control 2 adjust layers.enc {'eta': 0.001}: applied at epoch 4, step 180``."""
    what = f"control {c['seq']} {c['kind']}"
    if c.get("path"):
        what += f" {c['path']}"
    if c.get("hyper"):
        what += " " + ", ".join(f"{k}={v}" for k, v in c["hyper"].items())
    status = c.get("status", "")
    if status == "applied" and c.get("applied_step") is not None:
        status += f" at epoch {c['applied_epoch']}, step {c['applied_step']}"
    elif status == "rejected" and c.get("reason"):
        status += f": {c['reason']}"
    return f"{what}: {status}"


class WaitProgress:
    """Shows a job's events as they come (a no-op when ``enabled`` is False): a line per
    epoch row, control outcome and status change, and on a terminal a live bar below
    them with the epochs completed and the latest step's loss."""

    def __init__(self, job_id: str, total_epochs: int, *, enabled: bool = True,
                 file: IO[str] | None = None) -> None:
        self.job_id, self.total, self.enabled = job_id, total_epochs, enabled
        self.console = Console(file=file or sys.stderr, highlight=False)
        self.bar: Progress | None = None
        self.task: Any = None
        self.status: str | None = None

    def __enter__(self) -> WaitProgress:
        if self.enabled and self.console.is_terminal:
            self.bar = Progress(TextColumn("[bold]job {task.fields[job]}"),
                                BarColumn(bar_width=24),
                                TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total or None, job=self.job_id[:8],
                                          info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _print(self, line: str) -> None:
        """A line of its own (above the live bar, when there is one)."""
        if self.enabled:
            self.console.print(f"job {self.job_id[:8]}  {line}", markup=False, soft_wrap=True)

    def on_event(self, event: Event) -> None:
        """Show one event: a step batch moves the live bar, an epoch row, a control's
        outcome or a new status is printed."""
        data = event.data
        if event.kind == "steps" and data.get("losses") and self.bar is not None:
            step = data["first_step"] + len(data["losses"]) - 1
            self.bar.update(self.task, info=f"step {step} loss "
                                            f"{format_number(data['losses'][-1])}")
        elif event.kind == "epoch":
            self._print(format_epoch(data, self.total))
            if self.bar is not None:
                self.bar.update(self.task, completed=data["epoch"])
        elif event.kind == "control":
            self._print(format_control(data))
        elif event.kind == "status" and data.get("status") != self.status:
            # A status event also comes when only the epochs completed changed.
            self.status = data.get("status")
            error = f": {data['error']}" if data.get("error") else ""
            self._print(f"{self.status}{error}")
