"""The errors the client raises; callers branch on the class, not on the text."""

from __future__ import annotations


class JobboxError(Exception):
    """Base class of every error raised by this package."""


class InvalidJob(JobboxError, ValueError):
    """A job fails validation; nothing was sent. `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class NotFound(JobboxError):
    """The job (or its result) is not known."""


class Timeout(JobboxError, TimeoutError):
    """A wait ran out of time."""


class LayoutMissing(JobboxError):
    """jobbox's streams and buckets do not exist on this server yet.

    Any jobbox process creates them (a worker, or `jobbox stats`).
    """


class NatsError(JobboxError):
    """NATS or JetStream refused or failed an operation; `__cause__` is the nats-py error."""
