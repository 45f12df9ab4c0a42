"""Workers: the fleet that runs the jobs, as any user may see it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...schemas import WorkerPublic, WorkersPublic
from ...services import workers
from ..deps import CurrentUser, SessionDep, SettingsDep
from ..routing import CommitInHandler
from .system import LIVE_WORKER_LEASES

router = APIRouter(prefix="/workers", tags=["workers"], route_class=CommitInHandler)


@router.get("")
def list_workers(session: SessionDep, user: CurrentUser, settings: SettingsDep,
                 status: Annotated[workers.WorkerStatus | None, Query(
                     description="only the workers in this state")] = None) -> WorkersPublic:
    """List the workers, last seen first: each one's device, state and current job."""
    rows = workers.list_(session, user, LIVE_WORKER_LEASES * settings.lease_s, status)
    data = [WorkerPublic.model_validate(w).model_copy(update={"status": s, "job_id": j})
            for w, s, j in rows]
    return WorkersPublic(data=data, count=len(data))
