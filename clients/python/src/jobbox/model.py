"""The records: `Job` (with its builder methods and validation), `JobEvent`,
`JobResult` and `JobState`, as in `client/src/model/`.

Field names, defaults, limits and the order fields are written in are the Rust ones.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import msgpack

from . import wire
from .errors import InvalidJob
from .names import MAX_NAME_LEN, is_valid_name

DEFAULT_QUEUE = "default"
"""The queue a job goes to unless it names one."""
DEFAULT_PRIORITY = 5
"""The priority a job gets unless it sets one."""
MAX_PRIORITY = 9
"""Priorities run 0..=9."""
MAX_FIELD_LEN = 1024
"""Longest free-text field (content_type, tenant, created_by, handler), in bytes."""
MAX_METADATA_BYTES = 16 * 1024
"""Largest total size of metadata keys plus values, in bytes."""
MAX_PAYLOAD_BYTES = 1024 * 1024 - 64 * 1024
"""Largest payload: one NATS message (1 MiB) less 64 KiB for the rest of the job."""
MAX_DEPENDENCIES = 128
"""Most ids in `depends_on`."""
CONTENT_TYPE_JSON = "application/json"
"""The default content type of a payload."""
DIGEST_PREFIX = "sha256:"

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "DEAD_LETTER", "CANCELLED"})
"""Statuses after which nothing more happens to a job."""

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    """A fresh ULID: 48 bits of milliseconds and 80 random bits, 26 Crockford chars."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Job:
    """A unit of work: run the handler routed for `job_type` on `payload`.

    Build one with `Job(job_type, payload, queue=..., ...)` or `Job.json(job_type, value)`;
    the `with_*` methods return a changed copy (`.with_queue("q").with_priority(7)`), the
    Rust builder's methods with a `with_` in front. Defaults are the Rust ones.
    """

    job_type: str
    payload: bytes = b""
    id: str = field(default_factory=new_id)
    queue: str = DEFAULT_QUEUE
    content_type: str = CONTENT_TYPE_JSON
    priority: int = DEFAULT_PRIORITY
    max_retries: Optional[int] = None
    attempt: int = 1
    scheduled_at: Optional[datetime] = None
    created_at: datetime = field(default_factory=now)
    created_by: Optional[str] = None
    tenant: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    limits: Optional[Dict[str, int]] = None
    timeout_ms: Optional[int] = None
    handler: Optional[str] = None
    batch_id: Optional[str] = None
    depends_on: List[str] = field(default_factory=list)
    on_dependency_failure: str = "CANCEL"

    @classmethod
    def json(cls, job_type: str, value: Any) -> "Job":
        """A job whose payload is `value` as compact JSON (content type JSON)."""
        return cls(job_type, json.dumps(value, separators=(",", ":")).encode())

    def with_id(self, job_id: str) -> "Job":
        """Sets the id (a stable id makes an enqueue idempotent)."""
        return replace(self, id=job_id)

    def with_queue(self, queue: str) -> "Job":
        """Sets the queue."""
        return replace(self, queue=queue)

    def with_priority(self, priority: int) -> "Job":
        """Sets the priority (0..=9, checked by `validate`)."""
        return replace(self, priority=priority)

    def with_max_retries(self, max_retries: int) -> "Job":
        """Sets the number of retries after the first attempt."""
        return replace(self, max_retries=max_retries)

    def with_delay(self, delay: timedelta) -> "Job":
        """Runs the job no earlier than `delay` from now."""
        return replace(self, scheduled_at=now() + delay)

    def with_scheduled_at(self, when: datetime) -> "Job":
        """Runs the job no earlier than `when` (an aware datetime)."""
        return replace(self, scheduled_at=when)

    def with_metadata(self, key: str, value: str) -> "Job":
        """Adds one metadata entry."""
        return replace(self, metadata={**self.metadata, key: value})

    def with_timeout(self, timeout: timedelta) -> "Job":
        """Sets the wall-clock timeout (millisecond resolution, clamped by the route)."""
        return replace(self, timeout_ms=int(timeout / timedelta(milliseconds=1)))

    def with_limits(
        self,
        *,
        fuel: Optional[int] = None,
        memory_bytes: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        output_bytes: Optional[int] = None,
        log_bytes: Optional[int] = None,
    ) -> "Job":
        """Requests limits (each clamped by the route's ceiling; None = the route's)."""
        limits = {
            "fuel": fuel,
            "memory_bytes": memory_bytes,
            "timeout_ms": timeout_ms,
            "output_bytes": output_bytes,
            "log_bytes": log_bytes,
        }
        return replace(self, limits={k: v for k, v in limits.items() if v is not None})

    def with_tenant(self, tenant: str) -> "Job":
        """Sets the tenant."""
        return replace(self, tenant=tenant)

    def with_created_by(self, created_by: str) -> "Job":
        """Sets who created the job."""
        return replace(self, created_by=created_by)

    def with_handler(self, handler: str) -> "Job":
        """Pins the job to a handler digest (`sha256:<hex>`) or version label."""
        return replace(self, handler=handler)

    def with_depends_on(self, *job_ids: str) -> "Job":
        """Makes the job wait until every job in `job_ids` has COMPLETED."""
        return replace(self, depends_on=[*self.depends_on, *job_ids])

    def with_content_type(self, content_type: str) -> "Job":
        """Sets the payload's content type."""
        return replace(self, content_type=content_type)

    def is_delayed(self, at: Optional[datetime] = None) -> bool:
        """True if `scheduled_at` is after `at` (default now): the job waits as a schedule."""
        return self.scheduled_at is not None and self.scheduled_at > (at or now())

    def validate(self) -> None:
        """Checks what jobbox relies on, as `Job::validate` does; raises `InvalidJob`."""
        _check_name("id", self.id)
        _check_name("queue", self.queue)
        _check_name("job_type", self.job_type)
        if not isinstance(self.priority, int) or not 0 <= self.priority <= MAX_PRIORITY:
            raise InvalidJob("priority", f"priority {self.priority} is out of range 0..={MAX_PRIORITY}")
        if self.attempt < 1:
            raise InvalidJob("attempt", "attempt is 0, attempts count from 1")
        if not isinstance(self.payload, (bytes, bytearray)):
            raise InvalidJob("payload", "payload must be bytes")
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise InvalidJob("payload", f"payload is {len(self.payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in self.metadata.items())
        if size > MAX_METADATA_BYTES:
            raise InvalidJob("metadata", f"metadata is {size} bytes, more than {MAX_METADATA_BYTES}")
        if not self.content_type:
            raise InvalidJob("content_type", "content_type is empty")
        for name, value in (
            ("content_type", self.content_type),
            ("created_by", self.created_by),
            ("tenant", self.tenant),
            ("handler", self.handler),
        ):
            if value is not None and len(value.encode()) > MAX_FIELD_LEN:
                raise InvalidJob(name, f"{name} is {len(value.encode())} bytes long, more than {MAX_FIELD_LEN}")
        if self.batch_id is not None:
            _check_name("batch_id", self.batch_id)
        if len(self.depends_on) > MAX_DEPENDENCIES:
            raise InvalidJob("depends_on", f"depends_on has {len(self.depends_on)} job ids, more than {MAX_DEPENDENCIES}")
        for dependency in self.depends_on:
            _check_name("depends_on", dependency)
            if dependency == self.id:
                raise InvalidJob("depends_on", f"job {self.id} depends on itself")
        if self.handler is not None:
            if not self.handler:
                raise InvalidJob("handler", "handler is empty")
            if self.handler.startswith(DIGEST_PREFIX) and not _is_digest(self.handler):
                raise InvalidJob("handler", f"handler {self.handler!r} is not a valid digest (sha256:<64 lowercase hex digits>)")
        if self.on_dependency_failure not in ("CANCEL", "FAIL"):
            raise InvalidJob("on_dependency_failure", "on_dependency_failure must be CANCEL or FAIL")
        for at_name, at in (("created_at", self.created_at), ("scheduled_at", self.scheduled_at)):
            if at is not None and at.tzinfo is None:
                raise InvalidJob(at_name, f"{at_name} has no time zone: use datetime.now(timezone.utc)")

    def to_wire(self) -> Dict[str, Any]:
        """The job as a record, fields in the Rust declaration order, empty optionals left out."""
        record: Dict[str, Any] = {
            "id": self.id,
            "queue": self.queue,
            "job_type": self.job_type,
            "payload": bytes(self.payload),
            "content_type": self.content_type,
            "priority": self.priority,
        }
        if self.max_retries is not None:
            record["max_retries"] = self.max_retries
        record["attempt"] = self.attempt
        if self.scheduled_at is not None:
            record["scheduled_at"] = wire.format_time(self.scheduled_at)
        record["created_at"] = wire.format_time(self.created_at)
        _put_some(record, "created_by", self.created_by)
        _put_some(record, "tenant", self.tenant)
        if self.metadata:
            record["metadata"] = dict(sorted(self.metadata.items()))
        if self.limits:
            order = ("fuel", "memory_bytes", "timeout_ms", "output_bytes", "log_bytes")
            record["limits"] = {k: self.limits[k] for k in order if self.limits.get(k) is not None}
        _put_some(record, "timeout_ms", self.timeout_ms)
        _put_some(record, "handler", self.handler)
        _put_some(record, "batch_id", self.batch_id)
        if self.depends_on:
            record["depends_on"] = list(self.depends_on)
        if self.on_dependency_failure != "CANCEL":
            record["on_dependency_failure"] = self.on_dependency_failure
        return record

    @classmethod
    def from_wire(cls, record: Dict[str, Any]) -> "Job":
        """Reads a job record (defaults for what is absent)."""
        try:
            scheduled = record.get("scheduled_at")
            return cls(
                job_type=record["job_type"],
                payload=_bytes(record.get("payload")),
                id=record["id"],
                queue=record.get("queue") or DEFAULT_QUEUE,
                content_type=record.get("content_type") or CONTENT_TYPE_JSON,
                priority=_int(record.get("priority"), DEFAULT_PRIORITY),
                max_retries=record.get("max_retries"),
                attempt=_int(record.get("attempt"), 1),
                scheduled_at=wire.parse_time(scheduled) if scheduled is not None else None,
                created_at=wire.parse_time(record["created_at"]),
                created_by=record.get("created_by"),
                tenant=record.get("tenant"),
                metadata=dict(record.get("metadata") or {}),
                limits=record.get("limits"),
                timeout_ms=record.get("timeout_ms"),
                handler=record.get("handler"),
                batch_id=record.get("batch_id"),
                depends_on=list(record.get("depends_on") or []),
                on_dependency_failure=record.get("on_dependency_failure") or "CANCEL",
            )
        except KeyError as e:
            raise wire.WireError(f"job record lacks required field {e.args[0]!r}") from e


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job, as published on the events stream.

    `event_type` is the wire spelling (`"ENQUEUED"`, `"RETRY_SCHEDULED"`); a spelling
    this package does not know is kept as it is.
    """

    job_id: str
    event_type: str
    timestamp: datetime
    queue: str = ""
    job_type: str = ""
    worker_id: Optional[str] = None
    message: Optional[str] = None
    details: Dict[str, str] = field(default_factory=dict)
    error_type: Optional[str] = None
    error_message: Optional[str] = None
    duration_ms: Optional[int] = None
    nats_subject: Optional[str] = None
    nats_sequence: Optional[int] = None
    handler_digest: Optional[str] = None
    usage: Optional[Dict[str, int]] = None
    attempt: Optional[int] = None
    delay_ms: Optional[int] = None
    progress: Optional[Dict[str, Any]] = None

    @classmethod
    def about(cls, event_type: str, job: Job, at: Optional[datetime] = None) -> "JobEvent":
        """An event about `job`, stamped `at` (default now), with its id, queue, type and attempt."""
        return cls(
            job_id=job.id,
            event_type=event_type,
            timestamp=at or now(),
            queue=job.queue,
            job_type=job.job_type,
            attempt=job.attempt,
        )

    def to_wire(self) -> Dict[str, Any]:
        """The event as a record, fields in the Rust declaration order."""
        record: Dict[str, Any] = {
            "job_id": self.job_id,
            "event_type": self.event_type,
            "timestamp": wire.format_time(self.timestamp),
        }
        _put_some(record, "worker_id", self.worker_id)
        record["queue"] = self.queue
        record["job_type"] = self.job_type
        _put_some(record, "message", self.message)
        if self.details:
            record["details"] = dict(sorted(self.details.items()))
        for name in (
            "error_type",
            "error_message",
            "duration_ms",
            "nats_subject",
            "nats_sequence",
            "handler_digest",
            "usage",
            "attempt",
            "delay_ms",
            "progress",
        ):
            _put_some(record, name, getattr(self, name))
        return record

    @classmethod
    def from_wire(cls, record: Dict[str, Any]) -> "JobEvent":
        """Reads an event record."""
        try:
            return cls(
                job_id=record["job_id"],
                event_type=record["event_type"],
                timestamp=wire.parse_time(record["timestamp"]),
                queue=record.get("queue") or "",
                job_type=record.get("job_type") or "",
                worker_id=record.get("worker_id"),
                message=record.get("message"),
                details=dict(record.get("details") or {}),
                error_type=record.get("error_type"),
                error_message=record.get("error_message"),
                duration_ms=record.get("duration_ms"),
                nats_subject=record.get("nats_subject"),
                nats_sequence=record.get("nats_sequence"),
                handler_digest=record.get("handler_digest"),
                usage=record.get("usage"),
                attempt=record.get("attempt"),
                delay_ms=record.get("delay_ms"),
                progress=record.get("progress"),
            )
        except KeyError as e:
            raise wire.WireError(f"event record lacks required field {e.args[0]!r}") from e


USAGE_FIELDS = (
    "fuel_consumed",
    "peak_memory_bytes",
    "wall_time_us",
    "output_bytes",
    "log_bytes",
    "peak_scratch_bytes",
    "scratch_files",
)
"""The fields of a `Usage` record, in order."""


@dataclass(frozen=True)
class JobResult:
    """The outcome of a job: the value in `jobbox_results`, written once per job."""

    job_id: str
    status: str
    start_time: datetime
    finish_time: datetime
    worker_id: str = ""
    result: Optional[bytes] = None
    content_type: Optional[str] = None
    """The output's media type; `None` (older workers) reads as the job's."""
    error: Optional[str] = None
    error_type: Optional[str] = None
    retryable: bool = False
    traceback: Optional[str] = None
    attempts: int = 0
    handler_digest: Optional[str] = None
    usage: Dict[str, int] = field(default_factory=dict)
    logs: List[Dict[str, Any]] = field(default_factory=list)
    logs_dropped: int = 0
    trace_id: Optional[str] = None
    """The W3C trace id of the job's trace, when it had one."""
    extra: Dict[str, Any] = field(default_factory=dict)
    """Fields this package does not know (a newer writer's), kept as read."""

    @property
    def is_success(self) -> bool:
        """True if the job COMPLETED."""
        return self.status == "COMPLETED"

    def result_json(self) -> Any:
        """The output decoded as its content type says (MessagePack, else JSON); a
        completed job without output reads as `None`."""
        if self.result is not None:
            essence = (self.content_type or "").split(";")[0].strip().lower()
            if essence in ("application/msgpack", "application/x-msgpack"):
                return msgpack.unpackb(self.result, raw=False)
            return json.loads(self.result)
        if self.is_success:
            return None
        raise ValueError(f"job {self.job_id} has no result (status {self.status})")

    @classmethod
    def cancelled(cls, job_id: str, message: str, at: datetime) -> "JobResult":
        """The CANCELLED result `cancel` writes for a job that has not started."""
        return cls(
            job_id=job_id,
            status="CANCELLED",
            start_time=at,
            finish_time=at,
            error=message,
            error_type="cancelled",
        )

    def to_wire(self) -> Dict[str, Any]:
        """The result as a record, fields in the Rust declaration order."""
        record: Dict[str, Any] = {"job_id": self.job_id, "status": self.status}
        if self.result is not None:
            record["result"] = bytes(self.result)
        _put_some(record, "content_type", self.content_type)
        _put_some(record, "error", self.error)
        _put_some(record, "error_type", self.error_type)
        record["retryable"] = self.retryable
        _put_some(record, "traceback", self.traceback)
        record["start_time"] = wire.format_time(self.start_time)
        record["finish_time"] = wire.format_time(self.finish_time)
        record["attempts"] = self.attempts
        record["worker_id"] = self.worker_id
        _put_some(record, "handler_digest", self.handler_digest)
        record["usage"] = {name: int(self.usage.get(name, 0)) for name in USAGE_FIELDS}
        if self.logs:
            record["logs"] = list(self.logs)
        record["logs_dropped"] = self.logs_dropped
        _put_some(record, "trace_id", self.trace_id)
        return record

    @classmethod
    def from_wire(cls, record: Dict[str, Any]) -> "JobResult":
        """Reads a result record."""
        known = {
            "job_id", "status", "result", "error", "error_type", "retryable", "traceback",
            "start_time", "finish_time", "attempts", "worker_id", "handler_digest", "usage",
            "logs", "logs_dropped", "content_type", "trace_id",
        }  # fmt: skip
        try:
            result = record.get("result")
            return cls(
                job_id=record["job_id"],
                status=record["status"],
                start_time=wire.parse_time(record["start_time"]),
                finish_time=wire.parse_time(record["finish_time"]),
                worker_id=record.get("worker_id") or "",
                result=_bytes(result) if result is not None else None,
                content_type=record.get("content_type"),
                error=record.get("error"),
                error_type=record.get("error_type"),
                retryable=bool(record.get("retryable", False)),
                traceback=record.get("traceback"),
                attempts=_int(record.get("attempts"), 0),
                handler_digest=record.get("handler_digest"),
                usage=dict(record.get("usage") or {}),
                logs=list(record.get("logs") or []),
                logs_dropped=_int(record.get("logs_dropped"), 0),
                trace_id=record.get("trace_id"),
                extra={k: v for k, v in record.items() if k not in known},
            )
        except KeyError as e:
            raise wire.WireError(f"result record lacks required field {e.args[0]!r}") from e


@dataclass
class JobState:
    """A job's status as derived from its events and its result (nothing stores it)."""

    job_id: str
    queue: str
    job_type: str
    status: str
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    scheduled_at: Optional[datetime] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    cancel_requested: bool = False
    last_error: Optional[str] = None
    worker_id: Optional[str] = None


def _check_name(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise InvalidJob(name, f"{name} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidJob(name, f"{name} is empty")
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_LEN:
        raise InvalidJob(name, f"{name} is {size} bytes long, more than {MAX_NAME_LEN}")
    if not is_valid_name(value):
        raise InvalidJob(name, f"{name} {value!r} may contain only ASCII letters, digits, '_' and '-'")


def _is_digest(text: str) -> bool:
    hexpart = text[len(DIGEST_PREFIX) :]
    return len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)


def _put_some(record: Dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        record[key] = value


def _bytes(value: Any) -> bytes:
    """`bin` as written, `str` (a `use_bin_type=False` writer) and a list of small ints read too."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return bytes(value)
    raise wire.WireError(f"expected bytes, got {type(value).__name__}")


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)
