"""Every NATS name jobbox uses: streams, subjects, buckets (as in `client/src/nats.rs`)."""

from __future__ import annotations

from typing import Optional

JOBS_STREAM = "JOBBOX_JOBS"
"""The work-queue stream of jobs waiting to run."""
EVENTS_STREAM = "JOBBOX_EVENTS"
"""The stream of job events."""
STATS_STREAM = "JOBBOX_STATS"
"""The stream of per-queue counters (one counter per subject)."""
RESULTS_BUCKET = "jobbox_results"
"""KV bucket: job id -> JobResult."""
CANCELS_BUCKET = "jobbox_cancels"
"""KV bucket: job id -> CancelRequest."""

MAX_NAME_LEN = 128
"""Longest id, queue or job type, in bytes: they become subject tokens and KV keys."""

_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def is_valid_name(name: str) -> bool:
    """True if `name` is 1 to 128 bytes of ASCII letters, digits, `_` and `-`."""
    raw = name.encode("utf-8")
    return 0 < len(raw) <= MAX_NAME_LEN and all(b in _NAME_BYTES for b in raw)


def lane(priority: int) -> str:
    """The lane token of a priority: `low` (0-2), `normal` (3-6), `high` (7-9)."""
    if priority <= 2:
        return "low"
    if priority <= 6:
        return "normal"
    return "high"


def job_subject(queue: str, priority: int) -> str:
    """The subject a job of `queue` and `priority` is published on."""
    return f"jobbox.jobs.{queue}.{lane(priority)}"


def scheduled_subject(queue: str, job_id: str) -> str:
    """The subject a delayed job waits on (a message schedule) until it is due."""
    return f"jobbox.jobs.{queue}.scheduled.{job_id}"


def event_subject(queue: str, job_id: str, event_type: str) -> str:
    """The subject of an event about `job_id`: the event type in lower case last."""
    return f"jobbox.events.{queue}.{job_id}.{event_token(event_type)}"


def event_token(event_type: str) -> str:
    """An event type's subject token: lower case, anything outside `a-z0-9_-` as `_`."""
    token = "".join(c if c in "abcdefghijklmnopqrstuvwxyz0123456789_-" else "_" for c in event_type.lower())
    return token or "_"


def events_filter(queue: Optional[str] = None, job_id: Optional[str] = None) -> str:
    """The subject filter for events: all, one queue, or one job."""
    if queue is not None and job_id is not None:
        return f"jobbox.events.{queue}.{job_id}.*"
    if job_id is not None:
        return f"jobbox.events.*.{job_id}.*"
    if queue is not None:
        return f"jobbox.events.{queue}.>"
    return "jobbox.events.>"


def stats_subject(queue: str, counter: str) -> str:
    """The subject of one counter (`completed`, `failed`, `dead_letter`, `cancelled`)."""
    return f"jobbox.stats.{queue}.{counter}"
