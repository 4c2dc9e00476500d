"""Unit tests without a server: encoding, validation, what an enqueue writes, state."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgpack
import pytest

from jobbox import InvalidJob, Job, JobEvent, JobResult, derive_state, enqueue_events, final_event_id, job_message
from jobbox import wire

HOSTILE = ["a b", "a.b", "*", ">", "x" * 129, "", "é", "a\nb", "a/b"]
AT = datetime(2024, 5, 1, 12, 34, 56, 120000, tzinfo=timezone.utc)


def test_timestamps_are_written_as_chrono_writes_them() -> None:
    assert wire.format_time(AT.replace(microsecond=0)) == "2024-05-01T12:34:56Z"
    assert wire.format_time(AT) == "2024-05-01T12:34:56.120Z"
    assert wire.format_time(AT.replace(microsecond=123456)) == "2024-05-01T12:34:56.123456Z"
    assert wire.format_time(AT.replace(microsecond=123000)) == "2024-05-01T12:34:56.123Z"
    plus2 = timezone(timedelta(hours=2))
    assert wire.format_time(AT.astimezone(plus2)) == "2024-05-01T12:34:56.120Z"
    assert wire.format_time_millis(AT.replace(microsecond=0)) == "2024-05-01T12:34:56.000Z"
    assert wire.format_time_offset(AT) == "2024-05-01T12:34:56.120+00:00"
    with pytest.raises(ValueError):
        wire.format_time(datetime(2024, 5, 1))


def test_timestamps_are_read_with_any_offset_and_nanoseconds() -> None:
    assert wire.parse_time("2024-05-01T12:34:56.123456789Z") == AT.replace(microsecond=123456)
    assert wire.parse_time("2024-05-01T14:34:56.12+02:00") == AT
    assert wire.parse_time("2024-05-01 12:34:56Z") == AT.replace(microsecond=0)
    with pytest.raises(wire.WireError, match="no UTC offset"):
        wire.parse_time("2024-05-01T12:34:56")
    with pytest.raises(wire.WireError):
        wire.parse_time("yesterday")


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize("field", ["id", "queue", "job_type"])
def test_hostile_names_fail_validation(field: str, bad: str) -> None:
    job = Job("echo")
    job = {"id": job.with_id(bad), "queue": job.with_queue(bad), "job_type": Job(bad)}[field]
    with pytest.raises(InvalidJob) as error:
        job.validate()
    assert error.value.field == field


def test_valid_jobs_pass_and_limits_are_the_rust_ones() -> None:
    Job("echo").validate()
    Job("echo").with_id("x" * 128).with_queue("Q_1-a").validate()
    Job("echo").with_id("0190b7e2-8c5a-7cc0-9d4e-1a2b3c4d5e6f").validate()
    Job("echo", b"x" * (1024 * 1024 - 64 * 1024)).validate()
    Job("echo").with_handler("sha256:" + "ab" * 32).validate()
    Job("echo").with_handler("v1.2.3").validate()
    for bad, field in [
        (Job("echo", b"x" * (1024 * 1024 - 64 * 1024 + 1)), "payload"),
        (Job("echo").with_priority(10), "priority"),
        (Job("echo").with_handler("sha256:AB"), "handler"),
        (Job("echo").with_metadata("k", "v" * 16384), "metadata"),
        (Job("echo").with_tenant("t" * 1025), "tenant"),
        (Job("echo").with_content_type(""), "content_type"),
        (Job("echo").with_id("a").with_depends_on("a"), "depends_on"),
        (Job("echo").with_depends_on("a.b"), "depends_on"),
    ]:
        with pytest.raises(InvalidJob) as error:
            bad.validate()
        assert error.value.field == field


def test_a_minimal_job_is_written_in_rust_field_order() -> None:
    job = Job("echo", b'{"a":1}', id="J1", created_at=AT)
    record = job.to_wire()
    assert list(record) == ["id", "queue", "job_type", "payload", "content_type", "priority", "attempt", "created_at"]
    decoded = msgpack.unpackb(wire.encode(record), raw=False)
    assert decoded["payload"] == b'{"a":1}'  # bin, not str
    assert wire.encode(record)[1:4] == b"\xa2id"  # fixmap, then the first key
    assert Job.from_wire(decoded) == job


def test_a_full_job_keeps_every_field() -> None:
    job = (
        Job("echo", b"{}", id="J2", created_at=AT)
        .with_queue("q")
        .with_priority(8)
        .with_max_retries(1)
        .with_scheduled_at(AT)
        .with_metadata("b", "2")
        .with_metadata("a", "1")
        .with_tenant("t")
        .with_created_by("me")
        .with_timeout(timedelta(seconds=2))
        .with_limits(fuel=10, log_bytes=5)
        .with_handler("v1")
        .with_depends_on("J1")
    )
    record = job.to_wire()
    assert list(record["metadata"]) == ["a", "b"]
    assert record["timeout_ms"] == 2000
    assert list(record["limits"].items()) == [("fuel", 10), ("log_bytes", 5)]
    assert Job.from_wire(wire.decode(wire.encode(record))) == job


def test_an_enqueue_writes_enqueued_then_the_job_with_its_id() -> None:
    job = Job("echo", id="J3", created_at=AT).with_queue("q").with_priority(9)
    events = enqueue_events(job, AT)
    assert [(e.event_type, mid) for e, mid in events] == [("ENQUEUED", "J3.enqueued")]
    event = events[0][0].to_wire()
    assert list(event) == ["job_id", "event_type", "timestamp", "queue", "job_type", "attempt"]
    assert event["attempt"] == 1
    subject, headers, payload = job_message(job, job.id, AT)
    assert subject == "jobbox.jobs.q.high"
    assert headers == {"Nats-Msg-Id": "J3"}
    assert wire.decode(payload)["id"] == "J3"


def test_a_delayed_job_is_a_message_schedule_with_a_scheduled_event() -> None:
    due = AT + timedelta(minutes=5)
    job = Job("echo", id="J4", created_at=AT).with_queue("q").with_scheduled_at(due)
    events = enqueue_events(job, AT)
    assert [(e.event_type, mid) for e, mid in events] == [("SCHEDULED", "J4.scheduled"), ("ENQUEUED", "J4.enqueued")]
    assert events[0][0].details == {"scheduled_at": "2024-05-01T12:39:56.120+00:00"}
    subject, headers, _ = job_message(job, job.id, AT)
    assert subject == "jobbox.jobs.q.scheduled.J4"
    assert headers == {
        "Nats-Msg-Id": "J4",
        "Nats-Schedule": "@at 2024-05-01T12:39:56.120Z",
        "Nats-Schedule-Target": "jobbox.jobs.q.normal",
    }
    # Once due, the same job goes straight to its lane.
    assert job_message(job, job.id, due + timedelta(seconds=1))[0] == "jobbox.jobs.q.normal"


def test_terminal_event_ids_use_unix_microseconds() -> None:
    assert final_event_id("J", AT) == "J.final.1714566896120000"


def test_a_cancelled_result_has_the_rust_fields() -> None:
    record = JobResult.cancelled("J", "stop", AT).to_wire()
    assert record["status"] == "CANCELLED" and record["error_type"] == "cancelled"
    assert list(record) == [
        "job_id", "status", "error", "error_type", "retryable", "start_time", "finish_time",
        "attempts", "worker_id", "usage", "logs_dropped",
    ]  # fmt: skip
    back = JobResult.from_wire(wire.decode(wire.encode({**record, "from_a_newer_writer": "x"})))
    assert back.extra == {"from_a_newer_writer": "x"}


def test_state_follows_the_events_and_the_result() -> None:
    job = Job("echo", id="J5").with_queue("q")
    enqueued = JobEvent.about("ENQUEUED", job, AT)
    assert derive_state("J5", [], None, False) is None
    state = derive_state("J5", [enqueued], None, False)
    assert state is not None and (state.status, state.queue, state.attempts) == ("PENDING", "q", 0)
    started = JobEvent.about("STARTED", job, AT + timedelta(seconds=1))
    state = derive_state("J5", [enqueued, started], None, False)
    assert state is not None and (state.status, state.attempts) == ("RUNNING", 1)
    assert derive_state("J5", [enqueued, started], None, True).status == "RUNNING"  # type: ignore[union-attr]
    assert derive_state("J5", [enqueued], None, True).status == "CANCELLED"  # type: ignore[union-attr]
    done = JobResult("J5", "COMPLETED", AT, AT + timedelta(seconds=2), worker_id="w", attempts=1)
    state = derive_state("J5", [enqueued, started], done, False)
    assert state is not None and (state.status, state.worker_id) == ("COMPLETED", "w")
    assert state.finished_at == AT + timedelta(seconds=2)
