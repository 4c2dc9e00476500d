"""jobbox client: enqueue jobs, wait for results, follow events, status and cancel.

```python
import asyncio, jobbox

async def main() -> None:
    async with await jobbox.Client.connect("nats://127.0.0.1:4222") as client:
        enqueued = await client.enqueue(jobbox.Job.json("echo", {"hello": "world"}))
        result = await client.wait_result(enqueued.job_id, timeout=30)
        print(result.status, result.result_json())

asyncio.run(main())
```
"""

from .client import (
    ENQUEUE_PIPELINE,
    CancelKind,
    CancelOutcome,
    Client,
    Enqueued,
    EventsFrom,
    EventStream,
    enqueue_events,
    final_event_id,
    job_message,
)
from .errors import InvalidJob, JobboxError, LayoutMissing, NatsError, NotFound, Timeout
from .model import (
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    MAX_PAYLOAD_BYTES,
    TERMINAL_STATUSES,
    Job,
    JobEvent,
    JobResult,
    JobState,
    new_id,
)
from .names import MAX_NAME_LEN, is_valid_name
from .state import derive_state

__all__ = [
    "CancelKind",
    "CancelOutcome",
    "Client",
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "ENQUEUE_PIPELINE",
    "Enqueued",
    "EventStream",
    "EventsFrom",
    "InvalidJob",
    "Job",
    "JobEvent",
    "JobResult",
    "JobState",
    "JobboxError",
    "LayoutMissing",
    "MAX_NAME_LEN",
    "MAX_PAYLOAD_BYTES",
    "NatsError",
    "NotFound",
    "TERMINAL_STATUSES",
    "Timeout",
    "derive_state",
    "enqueue_events",
    "final_event_id",
    "is_valid_name",
    "job_message",
    "new_id",
]
