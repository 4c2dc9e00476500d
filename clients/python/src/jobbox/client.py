"""`Client`: connect, enqueue, wait for and read results, follow events, status, cancel.

The operations and their names are those of the Rust `jobbox::Client`, and every write
is the one the Rust client makes (`docs/wire-format.md`, "Enqueueing from another
language").
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsConnection
from nats.js import JetStreamContext, api

from . import names, wire
from .errors import InvalidJob, JobboxError, LayoutMissing, NatsError, NotFound, Timeout
from .model import Job, JobEvent, JobResult, JobState, now
from .state import derive_state

ENQUEUE_PIPELINE = 1024
"""Jobs whose publishes `enqueue_many` keeps in flight at once (as in Rust)."""
ENQUEUE_RETRY_FOR = 15.0
"""Seconds an enqueue keeps sending a job again while JetStream's answer is transient
(a cluster electing a stream leader). Safe: every write carries a message id."""
ACK_TIMEOUT = 5.0
"""Seconds to wait for JetStream to acknowledge one publish."""
EVENTS_READ_TIMEOUT = 5.0
"""Seconds reading one job's events may take."""
_MICROSECOND = timedelta(microseconds=1)
CANCELLED_MESSAGE = "the job was cancelled before it started"
"""The error of the CANCELLED result and event `cancel` writes (the Rust text)."""

_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.ConnectionReconnectingError,
    asyncio.TimeoutError,
)


class EventsFrom(enum.Enum):
    """Where a stream of events starts."""

    START = "start"
    """From the oldest event still kept."""
    NOW = "now"
    """Only events published from now on."""


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did."""

    job_id: str
    sequence: int
    """The job's sequence in the jobs stream."""
    duplicate: bool
    """True when the id was already enqueued inside the duplicate window: nothing added."""


class CancelKind(enum.Enum):
    """What `cancel` did (Rust: `CancelOutcome`)."""

    CANCELLED = "cancelled"
    """The job had not started: it will never run."""
    STOPPING = "stopping"
    """The job is running: its worker stops it."""
    ALREADY_FINISHED = "already_finished"
    """The job had already ended; nothing changed (`status` says how)."""


@dataclass(frozen=True)
class CancelOutcome:
    """What `cancel` did, and for `ALREADY_FINISHED` the final status."""

    kind: CancelKind
    status: Optional[str] = None


class EventStream:
    """Events as they come (an ordered consumer on the events stream).

    Use as `async for event in stream`; close it with `await stream.close()`, or use it
    as an async context manager.
    """

    def __init__(self, subscription: Any) -> None:
        self._sub = subscription

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self) -> JobEvent:
        return (await self.next_with_sequence())[1]

    async def next(self, timeout: Optional[float] = None) -> JobEvent:
        """The next event; `Timeout` if none comes within `timeout` seconds."""
        return (await self.next_with_sequence(timeout))[1]

    async def next_with_sequence(self, timeout: Optional[float] = None) -> Tuple[int, JobEvent]:
        """The next event with its sequence in the events stream."""
        try:
            msg = await asyncio.wait_for(self._sub.messages.__anext__(), timeout)
        except asyncio.TimeoutError as e:
            raise Timeout(f"no event within {timeout} s") from e
        return msg.metadata.sequence.stream, JobEvent.from_wire(wire.decode(msg.data))

    async def close(self) -> None:
        """Stops following (deletes the ephemeral consumer)."""
        try:
            await self._sub.unsubscribe()
        except nats.errors.Error:
            pass  # The connection is gone already: so is the consumer.

    async def __aenter__(self) -> "EventStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client:
    """A connection to jobbox's NATS layout. Create with `await Client.connect(url)`."""

    def __init__(self, nc: NatsConnection, js: JetStreamContext, results: Any, cancels: Any) -> None:
        self._nc = nc
        self._js = js
        self._results = results
        self._cancels = cancels

    @classmethod
    async def connect(cls, urls: str, *, name: str = "jobbox-python") -> "Client":
        """Connects to one of `urls` (comma-separated for a cluster).

        jobbox's streams and buckets must exist: any jobbox process creates them (a
        worker, `jobbox stats`); this client never creates them, so that their settings
        are always jobbox's own. Raises `LayoutMissing` otherwise.
        """
        servers = [url.strip() for url in urls.split(",") if url.strip()]
        if not servers:
            raise JobboxError(f"no NATS server URL in {urls!r}")
        try:
            nc = await nats.connect(servers=servers, name=name, connect_timeout=5, max_reconnect_attempts=-1)
        except (nats.errors.Error, OSError) as e:
            raise NatsError(f"connect to {urls}: {e}") from e
        js = nc.jetstream()
        try:
            for stream in (
                names.JOBS_STREAM,
                names.EVENTS_STREAM,
                names.STATS_STREAM,
                f"KV_{names.RESULTS_BUCKET}",
                f"KV_{names.CANCELS_BUCKET}",
            ):
                try:
                    await js.stream_info(stream)
                except nats.js.errors.NotFoundError as e:
                    raise LayoutMissing(
                        f"stream {stream} does not exist on {urls}: start a jobbox worker or run "
                        f"`jobbox stats --nats-url {urls}` once to create jobbox's layout"
                    ) from e
            results = await js.key_value(names.RESULTS_BUCKET)
            cancels = await js.key_value(names.CANCELS_BUCKET)
        except nats.errors.Error as e:
            await nc.close()
            raise NatsError(f"open jobbox's layout on {urls}: {e}") from e
        except LayoutMissing:
            await nc.close()
            raise
        return cls(nc, js, results, cancels)

    async def close(self) -> None:
        """Flushes and closes the connection."""
        await self._nc.drain()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def nats(self) -> NatsConnection:
        """The NATS connection."""
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context."""
        return self._js

    # Enqueue -------------------------------------------------------------------------

    async def enqueue(self, job: Job) -> Enqueued:
        """Validates `job`, then publishes its SCHEDULED (delayed jobs only) and ENQUEUED
        events and the job itself, each with its message id, and returns once JetStream
        has stored all of them. A job with `depends_on` is refused when a dependency is
        not a known job. Raises `InvalidJob` before sending anything."""
        job.validate()
        if job.depends_on:
            await self._check_dependencies([job])
        return await self._enqueue_checked(job)

    async def enqueue_many(self, jobs: Sequence[Job]) -> List[Union[Enqueued, JobboxError]]:
        """Enqueues many jobs, pipelined: all publishes of a chunk go out, then their
        acks are awaited. Returns one outcome per job, in order: an `Enqueued`, or the
        error of that job alone (an invalid job fails alone)."""
        outcomes: List[Union[Enqueued, JobboxError]] = []
        for start in range(0, len(jobs), ENQUEUE_PIPELINE):
            chunk = jobs[start : start + ENQUEUE_PIPELINE]
            # Per job: its pending acks, its error, or None to send it again alone.
            sent: List[Union[List[Tuple[str, asyncio.Future[api.PubAck]]], JobboxError, None]] = []
            for job in chunk:
                try:
                    job.validate()
                    sent.append(await self._send_enqueue(job))
                except JobboxError as e:
                    sent.append(e)
                except _TRANSIENT:
                    sent.append(None)
            for job, pending in zip(chunk, sent):
                if isinstance(pending, JobboxError):
                    outcomes.append(pending)
                    continue
                if pending is None:
                    outcomes.append(await self._enqueue_or_error(job))
                    continue
                try:
                    outcomes.append(await self._stored(job, pending))
                except _TRANSIENT:
                    outcomes.append(await self._enqueue_or_error(job))
                except JobboxError as e:
                    outcomes.append(e)
        return outcomes

    async def _enqueue_or_error(self, job: Job) -> Union[Enqueued, JobboxError]:
        try:
            return await self._enqueue_checked(job)
        except JobboxError as e:
            return e

    async def _enqueue_checked(self, job: Job) -> Enqueued:
        """Sends a valid job and waits for it to be stored, sending it again while the
        answer is transient, for up to `ENQUEUE_RETRY_FOR` seconds."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + ENQUEUE_RETRY_FOR
        pause = 0.05
        while True:
            try:
                return await self._stored(job, await self._send_enqueue(job))
            except _TRANSIENT as e:
                if loop.time() + pause >= give_up:
                    raise NatsError(f"enqueue job {job.id}: {e!r}") from e
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def _send_enqueue(self, job: Job) -> List[Tuple[str, asyncio.Future[api.PubAck]]]:
        """Publishes the job's enqueue events, then the job, without waiting for acks.
        Returns (what, ack future) in the order sent; the job's is last."""
        pending: List[Tuple[str, asyncio.Future[api.PubAck]]] = []
        at = now()  # One reading: a job due in between gets both writes of one kind.
        for event, message_id in enqueue_events(job, at):
            future = await self._publish(
                names.event_subject(event.queue, event.job_id, event.event_type),
                wire.encode(event.to_wire()),
                {"Nats-Msg-Id": message_id},
            )
            pending.append((f"record {event.event_type} for job {job.id}", future))
        subject, headers, payload = job_message(job, job.id, at)
        pending.append((f"enqueue job {job.id}", await self._publish(subject, payload, headers)))
        return pending

    async def _publish(self, subject: str, payload: bytes, headers: Dict[str, str]) -> asyncio.Future[api.PubAck]:
        try:
            return await self._js.publish_async(subject, payload, headers=headers)
        except _TRANSIENT:
            raise
        except nats.errors.Error as e:
            raise NatsError(f"publish on {subject}: {e}") from e

    async def _stored(self, job: Job, pending: List[Tuple[str, asyncio.Future[api.PubAck]]]) -> Enqueued:
        """Waits for every ack, in order; returns what the job's ack says."""
        ack: Optional[api.PubAck] = None
        for what, future in pending:
            try:
                ack = await asyncio.wait_for(future, ACK_TIMEOUT)
            except _TRANSIENT:
                raise
            except nats.errors.Error as e:
                raise NatsError(f"{what}: {e}") from e
        assert ack is not None
        return Enqueued(job_id=job.id, sequence=ack.seq, duplicate=bool(ack.duplicate))

    async def _check_dependencies(self, jobs: Sequence[Job]) -> None:
        inside = {job.id for job in jobs}
        outside = sorted({dep for job in jobs for dep in job.depends_on if dep not in inside})
        for job_id in outside:
            if await self.result(job_id) is not None:
                continue
            if not await self.job_events(job_id):
                raise InvalidJob("depends_on", f"dependency {job_id} is not a known job")

    # Results -------------------------------------------------------------------------

    async def result(self, job_id: str) -> Optional[JobResult]:
        """The job's result, if it has one."""
        _check_job_id(job_id)
        try:
            entry = await self._results.get(job_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        except nats.errors.Error as e:
            raise NatsError(f"read the result of job {job_id}: {e}") from e
        if not entry.value:
            return None
        return JobResult.from_wire(wire.decode(entry.value))

    async def wait_result(self, job_id: str, timeout: float) -> JobResult:
        """Waits up to `timeout` seconds for the job's result; `Timeout` after that."""
        _check_job_id(job_id)
        # Watch first, then read: a result written in between is seen by one of them.
        try:
            watcher = await self._results.watch(job_id)
        except nats.errors.Error as e:
            raise NatsError(f"watch the result of job {job_id}: {e}") from e
        try:
            found = await self.result(job_id)
            if found is not None:
                return found
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise Timeout(f"no result of job {job_id} within {timeout} s")
                try:
                    entry = await watcher.updates(timeout=left)
                except nats.errors.TimeoutError as e:
                    raise Timeout(f"no result of job {job_id} within {timeout} s") from e
                if entry is not None and entry.operation is None and entry.value:
                    return JobResult.from_wire(wire.decode(entry.value))
        finally:
            try:
                await watcher.stop()
            except nats.errors.Error:
                pass  # The connection is gone already: so is the watch.

    # Events and state ----------------------------------------------------------------

    async def events(
        self,
        queue: Optional[str] = None,
        job_id: Optional[str] = None,
        from_: EventsFrom = EventsFrom.START,
    ) -> EventStream:
        """Follows job events: all (no arguments), one queue, or one job."""
        subject = names.events_filter(queue, job_id)
        policy = api.DeliverPolicy.ALL if from_ is EventsFrom.START else api.DeliverPolicy.NEW
        try:
            sub = await self._js.subscribe(
                subject, stream=names.EVENTS_STREAM, ordered_consumer=True, deliver_policy=policy
            )
        except nats.errors.Error as e:
            raise NatsError(f"follow events on {subject}: {e}") from e
        return EventStream(sub)

    async def job_events(self, job_id: str) -> List[JobEvent]:
        """Every event of one job still kept, in stream order."""
        _check_job_id(job_id)
        subject = names.events_filter(None, job_id)
        try:
            info = await self._js.stream_info(names.EVENTS_STREAM, subjects_filter=subject)
        except nats.errors.Error as e:
            raise NatsError(f"read events on {subject}: {e}") from e
        if not (info.state.subjects or {}):
            return []
        stream = await self.events(None, job_id, EventsFrom.START)
        events: List[JobEvent] = []
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(stream._sub.messages.__anext__(), EVENTS_READ_TIMEOUT)
                except asyncio.TimeoutError as e:
                    raise Timeout(f"events of {job_id} not read within {EVENTS_READ_TIMEOUT} s") from e
                try:
                    events.append(JobEvent.from_wire(wire.decode(msg.data)))
                except wire.WireError:
                    pass  # An event this client cannot read does not hide the others.
                if msg.metadata.num_pending == 0:
                    return events
        finally:
            await stream.close()

    async def job_state(self, job_id: str) -> Optional[JobState]:
        """The job's state derived from its events and its result; None if unknown."""
        result = await self.result(job_id)
        events = await self.job_events(job_id)
        cancel_requested = await self._cancel_requested(job_id)
        return derive_state(job_id, events, result, cancel_requested)

    status = job_state
    """Another name of `job_state` (what `jobbox status` shows)."""

    async def _cancel_requested(self, job_id: str) -> bool:
        try:
            entry = await self._cancels.get(job_id)
        except nats.js.errors.KeyNotFoundError:
            return False
        except nats.errors.Error as e:
            raise NatsError(f"read the cancellation of job {job_id}: {e}") from e
        return bool(entry.value)

    # Cancel --------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancels a job, as `Client::cancel` does: a pending, delayed or retrying job
        never runs; a running one is stopped by its worker. Raises `NotFound` for an
        unknown job."""
        done = await self.result(job_id)
        if done is not None:
            return CancelOutcome(CancelKind.ALREADY_FINISHED, done.status)
        state = await self.job_state(job_id)
        if state is None:
            raise NotFound(f"job {job_id}")
        request = {"job_id": job_id, "requested_at": wire.format_time(now())}
        try:
            # The request first: a worker that started the job meanwhile stops it.
            await self._cancels.put(job_id, wire.encode(request))
        except nats.errors.Error as e:
            raise NatsError(f"record the cancellation of job {job_id}: {e}") from e
        if state.status == "RUNNING":
            return CancelOutcome(CancelKind.STOPPING)
        at = now()
        result = JobResult.cancelled(job_id, CANCELLED_MESSAGE, at)
        try:
            await self._results.create(job_id, wire.encode(result.to_wire()))
        except nats.js.errors.KeyWrongLastSequenceError:
            # A worker finished it first.
            finished = await self.result(job_id)
            return CancelOutcome(CancelKind.ALREADY_FINISHED, finished.status if finished else "CANCELLED")
        except nats.errors.Error as e:
            raise NatsError(f"cancel job {job_id}: {e}") from e
        try:
            if state.status == "SCHEDULED" and names.is_valid_name(state.queue):
                await self._js.purge_stream(names.JOBS_STREAM, subject=names.scheduled_subject(state.queue, job_id))
            event = JobEvent(
                job_id=job_id,
                event_type="CANCELLED",
                timestamp=now(),
                queue=state.queue,
                job_type=state.job_type,
                message=CANCELLED_MESSAGE,
                error_type="cancelled",
                error_message=CANCELLED_MESSAGE,
            )
            await self._js.publish(
                names.event_subject(state.queue, job_id, "CANCELLED"),
                wire.encode(event.to_wire()),
                headers={"Nats-Msg-Id": final_event_id(job_id, at)},
            )
            await self._js.publish(names.stats_subject(state.queue, "cancelled"), b"", headers={"Nats-Incr": "+1"})
        except nats.errors.Error as e:
            raise NatsError(f"record the cancellation of job {job_id}: {e}") from e
        return CancelOutcome(CancelKind.CANCELLED)


def job_message(job: Job, message_id: str, at: Optional[datetime] = None) -> Tuple[str, Dict[str, str], bytes]:
    """The message that stores `job`: subject, headers and payload (Rust: `job_message`).

    Due now: the lane subject with `Nats-Msg-Id`. Delayed: a message schedule on the
    job's own subject, which the server moves to the lane when due.
    """
    payload = wire.encode(job.to_wire())
    lane_subject = names.job_subject(job.queue, job.priority)
    headers = {"Nats-Msg-Id": message_id}
    if job.scheduled_at is not None and job.is_delayed(at):
        headers["Nats-Schedule"] = f"@at {wire.format_time_millis(job.scheduled_at)}"
        headers["Nats-Schedule-Target"] = lane_subject
        return names.scheduled_subject(job.queue, job.id), headers, payload
    return lane_subject, headers, payload


def enqueue_events(job: Job, at: Optional[datetime] = None) -> List[Tuple[JobEvent, str]]:
    """The events a just-enqueued job gets, with their message ids: SCHEDULED (with its
    due time) for a delayed job, then ENQUEUED (Rust: `enqueue_events`)."""
    events: List[Tuple[JobEvent, str]] = []
    if job.scheduled_at is not None and job.is_delayed(at):
        scheduled = JobEvent.about("SCHEDULED", job, at)
        scheduled.details["scheduled_at"] = wire.format_time_offset(job.scheduled_at)
        events.append((scheduled, f"{job.id}.scheduled"))
    events.append((JobEvent.about("ENQUEUED", job, at), f"{job.id}.enqueued"))
    return events


def final_event_id(job_id: str, result_start: datetime) -> str:
    """The message id of a job's terminal event: `<job_id>.final.<start in Unix µs>`."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    micros = (result_start - epoch) // _MICROSECOND
    return f"{job_id}.final.{micros}"


def _check_job_id(job_id: str) -> None:
    if not names.is_valid_name(job_id):
        raise NotFound(f"job {job_id!r} (not a valid id)")
