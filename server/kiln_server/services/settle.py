"""What becomes of a job's pending controls when it changes status: one table, one statement.

Every way a job leaves a status settles its controls here: a worker's finish, a release,
the reaper, the jobs of a dead worker let go, and a pause, resume or cancel carried out
at once on a job no worker holds. The status the job enters decides, by kind: a control
it carries out is applied, stamped with the job's progress at that moment; one it can no
longer carry out is rejected, saying why; any other stays pending for the worker that
takes the job next (a queued or paused job keeps its adjust, freeze and thaw).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Column, ColumnElement, String, Update, bindparam, case, select, update
from sqlalchemy.orm import Session

from ..models import Control, ControlKind, ControlStatus, Job, JobStatus, utcnow

__all__ = ["LIFECYCLE", "VERDICTS", "settle"]

#: The controls of a job's lifecycle, which a worker does not apply to its optimiser.
LIFECYCLE = (ControlKind.pause, ControlKind.cancel, ControlKind.resume)

_APPLIED, _REJECTED = ControlStatus.applied, ControlStatus.rejected
_TUNING = (ControlKind.adjust, ControlKind.freeze, ControlKind.thaw)

#: Per status a job enters, what each kind of pending control becomes (a kind not named
#: stays pending; a finished job has none left). A running job settles nothing: its
#: worker applies its controls.
VERDICTS: dict[JobStatus, dict[ControlKind, ControlStatus]] = {
    JobStatus.queued: {ControlKind.resume: _APPLIED},
    JobStatus.paused: {ControlKind.pause: _APPLIED, ControlKind.cancel: _REJECTED},
    JobStatus.cancelled: {ControlKind.cancel: _APPLIED, ControlKind.pause: _APPLIED,
                          ControlKind.resume: _REJECTED, **dict.fromkeys(_TUNING, _REJECTED)},
    JobStatus.succeeded: dict.fromkeys(ControlKind, _REJECTED),
    JobStatus.failed: dict.fromkeys(ControlKind, _REJECTED),
}


def _statement(status: JobStatus) -> Update:
    """The UPDATE that settles the pending controls of the jobs ``status`` is entered by
    (the bound ``jobs``; ``reason``, that of the applied ones; ``now``). On the tables,
    not the ORM's classes: an ORM UPDATE costs several times the statement's own work."""
    verdicts = VERDICTS[status]
    applied = [k for k, v in verdicts.items() if v == _APPLIED]
    control, job = Control.__table__.c, Job.__table__.c

    def progress(column: Column[int]) -> ColumnElement[int | None]:
        """The job's, read in the statement, for an applied control."""
        return case((control.kind.in_(applied),
                     select(column).where(job.id == control.job_id).scalar_subquery()))

    return (update(Control.__table__)
            .where(control.job_id.in_(bindparam("jobs", expanding=True)),
                   control.status == ControlStatus.pending, control.kind.in_(list(verdicts)))
            .values(status=case(*((control.kind == k, v.value) for k, v in verdicts.items())),
                    reason=case((control.kind.in_(applied), bindparam("reason", type_=String)),
                                (control.kind.in_(LIFECYCLE), f"the job {status} first"),
                                else_=f"the job {status} before the control applied"),
                    applied_epoch=progress(job.epoch), applied_step=progress(job.step),
                    resolved_at=bindparam("now")))


#: Built once: building the statement cost more than running it.
_SETTLE = {status: _statement(status) for status in VERDICTS}


def settle(session: Session, job_ids: Collection[str], status: JobStatus,
           how: str | None = None) -> None:
    """Settle the pending controls of ``job_ids``, which have just entered ``status``, as
    :data:`VERDICTS` says. ``how`` says how the applied ones were carried out when no
    worker said so ("when the worker's lease expired"); their reason, else none."""
    session.execute(_SETTLE[status], {"jobs": list(job_ids), "now": utcnow(),
                                      "reason": f"applied {how}" if how else None})
