"""Settings of the live tests, from the environment the Rust test
`tests/tests/all/python_client.rs` sets up (a nats-server, an echo route, a worker):

- `JOBBOX_TEST_NATS_URL`: the server; without it the live tests skip, unless
  `JOBBOX_TEST_REQUIRE_SERVER=1`, when they fail instead.
- `JOBBOX_BIN`: the `jobbox` binary (default `jobbox` on PATH).
- `JOBBOX_TEST_QUEUE`: a queue a worker serves, with job types `echo` and `spin` (an
  endless loop) deployed; `JOBBOX_TEST_IDLE_QUEUE`: one that no worker serves.
- `JOBBOX_TEST_EMPTY_NATS_URL`: a server without jobbox's layout, where connecting must
  fail and create nothing.
- `JOBBOX_TEST_RUST_JOB`: a job the Rust client enqueued (and saw complete) on the
  served queue; `JOBBOX_TEST_HANDOFF`: a file the tests write ids into for the Rust
  side to read back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import pytest


@dataclass(frozen=True)
class Live:
    """Where the live tests run."""

    url: str
    jobbox_bin: str
    queue: str
    idle_queue: str
    rust_job: Optional[str]
    handoff: Optional[str]
    empty_url: Optional[str]


@pytest.fixture(scope="session")
def live() -> Live:
    url = os.environ.get("JOBBOX_TEST_NATS_URL")
    if not url:
        if os.environ.get("JOBBOX_TEST_REQUIRE_SERVER") == "1":
            pytest.fail("JOBBOX_TEST_NATS_URL is not set but JOBBOX_TEST_REQUIRE_SERVER=1")
        pytest.skip("JOBBOX_TEST_NATS_URL is not set: run through tests/tests/all/python_client.rs")
    return Live(
        url=url,
        jobbox_bin=os.environ.get("JOBBOX_BIN", "jobbox"),
        queue=os.environ.get("JOBBOX_TEST_QUEUE", "py"),
        idle_queue=os.environ.get("JOBBOX_TEST_IDLE_QUEUE", "py-idle"),
        rust_job=os.environ.get("JOBBOX_TEST_RUST_JOB"),
        handoff=os.environ.get("JOBBOX_TEST_HANDOFF"),
        empty_url=os.environ.get("JOBBOX_TEST_EMPTY_NATS_URL"),
    )
