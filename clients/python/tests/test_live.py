"""The client against a real nats-server and a real `jobbox worker` (see conftest.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Dict, List, TypeVar

import msgpack
import nats
import pytest

from jobbox import CancelKind, Client, Enqueued, EventsFrom, InvalidJob, Job, LayoutMissing, NotFound, wire

from conftest import Live

T = TypeVar("T")
WAIT = 120.0
"""A bound on waits for the worker, not a speed assertion: a test fails only if a result
never comes."""
HOSTILE = ["a b", "a.b", "*", ">", "x" * 129, ""]


def run(coro: Callable[[Client], Awaitable[T]], live: Live) -> T:
    """Runs `coro` with a fresh client on its own event loop."""

    async def main() -> T:
        client = await Client.connect(live.url)
        try:
            return await coro(client)
        finally:
            await client.close()

    return asyncio.run(main())


def jobbox(live: Live, *args: str) -> "subprocess.CompletedProcess[str]":
    """Runs the jobbox CLI against the test server."""
    return subprocess.run(
        [live.jobbox_bin, "-o", "json", *args, "--nats-url", live.url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_status(live: Live, job_id: str) -> Dict[str, Any]:
    done = jobbox(live, "status", job_id)
    assert done.returncode == 0, f"jobbox status {job_id}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def handoff(live: Live, key: str, value: Any) -> None:
    """Records `value` under `key` for the Rust side of the test."""
    if not live.handoff:
        return
    try:
        with open(live.handoff, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        data = {}
    data[key] = value
    with open(live.handoff, "w", encoding="utf-8") as f:
        json.dump(data, f)


def test_hostile_names_are_refused_before_anything_is_sent(live: Live) -> None:
    async def body(client: Client) -> None:
        sent: List[str] = []
        publish = client.jetstream.publish_async

        async def counting(subject: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(subject)
            return await publish(subject, *args, **kwargs)

        client.jetstream.publish_async = counting  # type: ignore[method-assign]
        for bad in HOSTILE:
            for job in (
                Job("echo").with_id(bad).with_queue(live.idle_queue),
                Job("echo").with_queue(bad),
                Job(bad).with_queue(live.idle_queue),
            ):
                with pytest.raises(InvalidJob):
                    await client.enqueue(job)
        outcomes = await client.enqueue_many([Job("echo").with_id(bad).with_queue(live.idle_queue) for bad in HOSTILE])
        assert all(isinstance(o, InvalidJob) for o in outcomes), outcomes
        assert sent == []
        for bad in HOSTILE:
            with pytest.raises(NotFound):
                await client.job_state(bad)
            with pytest.raises(NotFound):
                await client.cancel(bad)

    run(body, live)


def test_enqueue_one_and_wait_for_the_echo_result(live: Live) -> None:
    async def body(client: Client) -> None:
        job = Job.json("echo", {"hello": "python"}).with_queue(live.queue)
        enqueued = await client.enqueue(job)
        assert enqueued == Enqueued(job.id, enqueued.sequence, False)
        result = await client.wait_result(job.id, WAIT)
        assert result.status == "COMPLETED", result
        assert result.result_json() == {"hello": "python"}
        assert result.content_type == "application/json"
        assert await client.result(job.id) == result
        # The result says the output's encoding: echo answers in the job's.
        packed = Job("echo", msgpack.packb({"hello": "msgpack"})).with_queue(live.queue)
        packed = packed.with_content_type("application/msgpack")
        await client.enqueue(packed)
        packed_result = await client.wait_result(packed.id, WAIT)
        assert packed_result.content_type == "application/msgpack", packed_result
        assert packed_result.result_json() == {"hello": "msgpack"}
        # The same id again inside the duplicate window adds nothing.
        again = await client.enqueue(job)
        assert again.duplicate and again.sequence == enqueued.sequence
        handoff(live, "completed", job.id)

    run(body, live)


def test_enqueue_many_each_job_gets_its_result(live: Live) -> None:
    async def body(client: Client) -> None:
        jobs = [Job.json("echo", {"i": i}).with_queue(live.queue) for i in range(25)]
        jobs.insert(7, Job("echo").with_id("not valid"))
        outcomes = await client.enqueue_many(jobs)
        assert isinstance(outcomes[7], InvalidJob)
        for i, (job, outcome) in enumerate(zip(jobs, outcomes)):
            if i == 7:
                continue
            assert isinstance(outcome, Enqueued) and outcome.job_id == job.id, outcome
        for job in jobs[:7] + jobs[8:]:
            result = await client.wait_result(job.id, WAIT)
            assert result.status == "COMPLETED", result
            assert result.result_json() == json.loads(job.payload)

    run(body, live)


def test_follows_a_jobs_events_to_completion(live: Live) -> None:
    async def body(client: Client) -> None:
        job = Job.json("echo", {"follow": True}).with_queue(live.queue)
        async with await client.events(live.queue, job.id, EventsFrom.START) as events:
            await client.enqueue(job)
            seen: List[str] = []
            while not seen or seen[-1] != "COMPLETED":
                event = await events.next(timeout=WAIT)
                assert event.job_id == job.id and event.queue == live.queue
                seen.append(event.event_type)
        assert seen == ["ENQUEUED", "STARTED", "COMPLETED"]
        state = await client.job_state(job.id)
        assert state is not None and state.status == "COMPLETED" and state.attempts == 1
        assert [e.event_type for e in await client.job_events(job.id)] == seen

    run(body, live)


def test_a_job_is_visible_to_jobbox_status_at_once_and_jobbox_cancel_works(live: Live) -> None:
    job = Job.json("echo", {"wait": "forever"}).with_queue(live.idle_queue).with_tenant("py")

    async def enqueue(client: Client) -> None:
        await client.enqueue(job)

    run(enqueue, live)
    # No worker serves this queue: only what the enqueue wrote can make it known.
    status = cli_status(live, job.id)
    assert (status["status"], status["queue"], status["job_type"]) == ("PENDING", live.idle_queue, "echo")
    assert status["attempts"] == 0 and not status["cancel_requested"]
    assert wire.parse_time(status["created_at"]) >= job.created_at - timedelta(seconds=1)

    done = jobbox(live, "cancel", job.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["outcome"].startswith("cancelled")

    async def after(client: Client) -> None:
        result = await client.result(job.id)
        assert result is not None and result.status == "CANCELLED" and result.error_type == "cancelled"
        outcome = await client.cancel(job.id)
        assert (outcome.kind, outcome.status) == (CancelKind.ALREADY_FINISHED, "CANCELLED")
        state = await client.status(job.id)
        assert state is not None and state.status == "CANCELLED" and state.cancel_requested

    run(after, live)
    assert cli_status(live, job.id)["status"] == "CANCELLED"


def test_python_cancel_ends_a_pending_job_for_jobbox_too(live: Live) -> None:
    async def body(client: Client) -> str:
        job = Job.json("echo", {}).with_queue(live.idle_queue)
        await client.enqueue(job)
        state = await client.job_state(job.id)
        assert state is not None and state.status == "PENDING"
        outcome = await client.cancel(job.id)
        assert outcome.kind == CancelKind.CANCELLED
        result = await client.wait_result(job.id, WAIT)
        assert result.status == "CANCELLED"
        assert [e.event_type for e in await client.job_events(job.id)] == ["ENQUEUED", "CANCELLED"]
        with pytest.raises(NotFound):
            await client.cancel("never-enqueued-" + job.id)
        return job.id

    job_id = run(body, live)
    handoff(live, "cancelled", job_id)
    status = cli_status(live, job_id)
    assert status["status"] == "CANCELLED" and status["cancel_requested"]
    result = jobbox(live, "result", job_id)
    assert result.returncode == 1, result.stdout + result.stderr  # 0 only for COMPLETED
    assert json.loads(result.stdout)["status"] == "CANCELLED"


def test_python_cancel_stops_a_running_job(live: Live) -> None:
    async def body(client: Client) -> None:
        # An endless loop with unlimited fuel: only a cancel (or the 30 s timeout) ends it.
        job = Job.json("spin", {}).with_queue(live.queue).with_limits(fuel=2**64 - 1)
        async with await client.events(live.queue, job.id) as events:
            await client.enqueue(job)
            while (await events.next(timeout=WAIT)).event_type != "STARTED":
                pass
        outcome = await client.cancel(job.id)
        assert outcome.kind == CancelKind.STOPPING
        result = await client.wait_result(job.id, WAIT)
        assert (result.status, result.error_type) == ("CANCELLED", "cancelled"), result
        again = await client.cancel(job.id)
        assert (again.kind, again.status) == (CancelKind.ALREADY_FINISHED, "CANCELLED")

    run(body, live)


def test_a_delayed_job_is_scheduled_and_cancel_removes_its_schedule(live: Live) -> None:
    due = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    job = Job.json("echo", {"later": 1}).with_queue(live.idle_queue).with_scheduled_at(due)
    kept = Job.json("echo", {"later": 2}).with_queue(live.idle_queue).with_scheduled_at(due)

    async def enqueue(client: Client) -> None:
        await client.enqueue(job)
        await client.enqueue(kept)

    run(enqueue, live)
    status = cli_status(live, job.id)
    assert status["status"] == "SCHEDULED"
    assert wire.parse_time(status["scheduled_at"]) == due
    handoff(live, "delayed", kept.id)

    async def cancel(client: Client) -> None:
        assert (await client.cancel(job.id)).kind == CancelKind.CANCELLED
        subject = f"jobbox.jobs.{live.idle_queue}.scheduled.{job.id}"
        info = await client.jetstream.stream_info("JOBBOX_JOBS", subjects_filter=subject)
        assert not (info.state.subjects or {}), info.state.subjects

    run(cancel, live)
    assert cli_status(live, job.id)["status"] == "CANCELLED"


def test_reads_a_job_the_rust_client_enqueued(live: Live) -> None:
    if not live.rust_job:
        pytest.skip("JOBBOX_TEST_RUST_JOB is not set")
    job_id = live.rust_job

    async def body(client: Client) -> None:
        result = await client.wait_result(job_id, WAIT)
        assert result.status == "COMPLETED" and result.result_json() == {"from": "rust"}
        state = await client.job_state(job_id)
        assert state is not None and (state.status, state.queue) == ("COMPLETED", live.queue)
        kinds = [e.event_type for e in await client.job_events(job_id)]
        assert kinds == ["ENQUEUED", "STARTED", "COMPLETED"]

    run(body, live)


def test_a_job_with_every_field_for_the_rust_side(live: Live) -> None:
    """Left pending on the idle queue; the Rust test decodes it, encodes it again and
    compares the bytes with what this client published."""
    job = (
        Job.json("echo", {"every": "field"})
        .with_queue(live.idle_queue)
        .with_priority(8)
        .with_max_retries(1)
        .with_metadata("b", "2")
        .with_metadata("a", "é")
        .with_tenant("tenant-1")
        .with_created_by("pytest")
        .with_timeout(timedelta(milliseconds=2500))
        .with_content_type("application/json")
    )

    async def body(client: Client) -> None:
        await client.enqueue(job)
        state = await client.job_state(job.id)
        assert state is not None and state.status == "PENDING"

    run(body, live)
    handoff(live, "pending", job.id)


def test_connect_refuses_a_server_without_the_layout_and_creates_nothing(live: Live) -> None:
    if not live.empty_url:
        pytest.skip("JOBBOX_TEST_EMPTY_NATS_URL is not set")
    empty_url = live.empty_url

    async def body() -> None:
        with pytest.raises(LayoutMissing, match="JOBBOX_JOBS"):
            await Client.connect(empty_url)
        nc = await nats.connect(empty_url)
        try:
            assert await nc.jetstream().streams_info() == []
        finally:
            await nc.close()

    asyncio.run(body())
