"""A job's state from its events and result: the rules of `client/src/job_view.rs`.

Pure, so every case is a unit test; `Client.job_state` reads the inputs.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from . import wire
from .model import JobEvent, JobResult, JobState


def derive_state(
    job_id: str,
    events: Sequence[JobEvent],
    result: Optional[JobResult],
    cancel_requested: bool,
) -> Optional[JobState]:
    """The state of `job_id` from its events (stream order) and result; None if unknown."""
    first = events[0] if events else None
    if first is None and result is None:
        return None
    enqueued: List[JobEvent] = [e for e in events if e.event_type == "ENQUEUED"]
    if enqueued:
        created_at = enqueued[0].timestamp
    elif first is not None:
        created_at = first.timestamp
    else:
        assert result is not None
        created_at = result.start_time
    state = JobState(
        job_id=job_id,
        queue=first.queue if first else "",
        job_type=first.job_type if first else "",
        status="PENDING",
        created_at=created_at,
        updated_at=created_at,
        cancel_requested=cancel_requested,
    )
    scheduled = False
    for event in events:
        state.updated_at = max(state.updated_at, event.timestamp)
        kind = event.event_type
        if kind == "ENQUEUED":
            # A replayed job starts over.
            state.status = "PENDING"
            state.attempts = 0
        elif kind == "SCHEDULED":
            scheduled = True
            at = event.details.get("scheduled_at")
            try:
                state.scheduled_at = wire.parse_time(at) if at is not None else None
            except wire.WireError:
                state.scheduled_at = None
        elif kind == "STARTED":
            state.status = "RUNNING"
            state.attempts = max(state.attempts, event.attempt or 1)
            state.started_at = event.timestamp
            state.worker_id = event.worker_id
        elif kind == "RETRY_SCHEDULED":
            state.status = "RETRYING"
            state.last_error = event.error_message
    if state.status == "PENDING" and scheduled:
        state.status = "SCHEDULED"
    if result is not None:
        state.status = result.status
        state.attempts = max(state.attempts, result.attempts)
        state.started_at = state.started_at or result.start_time
        state.finished_at = result.finish_time
        state.updated_at = max(state.updated_at, result.finish_time)
        state.last_error = result.error
        if result.worker_id:
            state.worker_id = result.worker_id
    elif cancel_requested and state.status != "RUNNING":
        state.status = "CANCELLED"
    return state
