"""Write jobbox job handlers in Python: one function, built with componentize-py.

A handler is a function from a job's input to its output. The worker runs each job in
a fresh WebAssembly instance of your handler, under the fuel, memory, time and output
limits the operator set, and records what your function returned::

    import jobbox_guest
    from jobbox_guest import Context, Reject

    def count_words(data, ctx: Context):
        text = data["text"]
        if len(text) > 1 << 20:
            raise Reject("text longer than 1 MiB")  # final: never retried
        jobbox_guest.info(f"job {ctx.id} (attempt {ctx.attempt})")
        ctx.progress(0, "split")
        words = text.split()
        ctx.progress(100, "done")
        return {"words": len(words)}

    Handler = jobbox_guest.export_handler(count_words)

componentize-py looks for a class called ``Handler`` in the app module: assign what
:func:`export_handler` returns to it. Build with (from the repository root)::

    guest-sdk/python/build.sh path/to/app-dir out.wasm

which runs ``componentize-py -d guest-sdk/wit -w handler-world componentize
-p guest-sdk/python -p path/to/app-dir app -o out.wasm``.

Input and output: a typed handler (the default) gets the payload decoded from JSON
(``application/json``, ``text/json``, any ``application/*+json``, or no content type;
an empty payload is ``None``) and returns anything :func:`json.dumps` accepts. A
payload that does not decode rejects the job with ``invalid input: <reason>``; another
content type rejects it too (MessagePack needs a package the standard library does not
have: use a raw handler). ``export_handler(fn, raw=True)`` passes the payload as
``bytes`` and expects ``bytes`` back.

Errors: raise :class:`Reject` for a job that can never succeed as it is, and
:class:`Retry` for a transient problem (the worker retries the job later, with
backoff, while it has retries left). Any other exception escaping the function is a
bug, like a Rust panic: the job fails for good as a ``trap`` whose message is
``uncaught exception: <Type>: <message>``, and the traceback's last line is appended
to the job's log at error level.

Logs and progress: :func:`info`, :func:`warn` and friends append lines to the job's
log; :meth:`Context.progress` reports how far the job has come. Both are bounded by
the worker and never fail a job. Outside WebAssembly (in your unit tests, where the
generated ``wit_world`` bindings do not exist) they print to stderr.
"""

import json
import sys
import traceback

try:  # Inside the component: the bindings componentize-py generates.
    from componentize_py_types import Err
    from wit_world import exports as _exports
    from wit_world.exports import handler as _wit
    from wit_world.imports import host as _host
except ImportError:  # Outside it: plain Python, for unit tests.
    _exports = None
    _wit = None
    _host = None

__all__ = [
    "Context",
    "Reject",
    "Retry",
    "export_handler",
    "log",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
]

#: The default content type, also assumed when a job gives none.
JSON = "application/json"

_LEVELS = ("trace", "debug", "info", "warn", "error")


class Reject(Exception):
    """A permanent failure: the worker records it and does not retry the job."""

    def __init__(self, message):
        super().__init__(str(message))
        self.message = str(message)


class Retry(Exception):
    """A transient failure: the worker retries the job later (with backoff) while it
    has retries left, and records a final failure after the last one."""

    def __init__(self, message):
        super().__init__(str(message))
        self.message = str(message)


def log(level, message):
    """Appends ``message`` to the job's log at ``level`` (one of ``"trace"``,
    ``"debug"``, ``"info"``, ``"warn"``, ``"error"``; anything else logs as info)."""
    level = level if level in _LEVELS else "info"
    message = str(message)
    if _host is None:
        print(f"[{level}] {message}", file=sys.stderr)
        return
    _host.log(_host.LogLevel[level.upper()], message)


def trace(message):
    """Appends ``message`` to the job's log at trace level."""
    log("trace", message)


def debug(message):
    """Appends ``message`` to the job's log at debug level."""
    log("debug", message)


def info(message):
    """Appends ``message`` to the job's log at info level."""
    log("info", message)


def warn(message):
    """Appends ``message`` to the job's log at warn level."""
    log("warn", message)


def error(message):
    """Appends ``message`` to the job's log at error level."""
    log("error", message)


class Context:
    """The job a handler is running (everything but the payload), and the way to
    report progress back to the worker.

    To unit-test a handler outside WebAssembly, build one yourself:
    ``Context(job_type="word-count")``; progress then goes to stderr.
    """

    def __init__(
        self,
        job_type="local",
        id="local",
        queue="default",
        attempt=1,
        content_type=JSON,
        metadata=None,
    ):
        #: The job's unique id (a ULID).
        self.id = id
        #: The job type the job was routed by, e.g. ``"word-count"``.
        self.job_type = job_type
        #: The queue the job was enqueued on.
        self.queue = queue
        #: Which attempt this is: 1 for the first run, 2 for the first retry, ...
        self.attempt = attempt
        #: The payload's media type; ``application/json`` when the job gave none.
        self.content_type = content_type.strip() or JSON
        #: The metadata entries the enqueuer attached, as ``(key, value)`` pairs.
        self.metadata_pairs = list(metadata or [])

    def metadata(self, key):
        """The value of the metadata entry ``key`` (the first, if there are several),
        or ``None``."""
        for k, v in self.metadata_pairs:
            if k == key:
                return v
        return None

    def progress(self, percent, step=None, message=None):
        """Reports progress: ``percent`` (clamped to 0–100), an optional short step
        name and an optional message. The worker rate-limits reports."""
        percent = max(0, min(100, int(percent)))
        if _host is None:
            print(f"[progress] {percent}% {step or ''} {message or ''}", file=sys.stderr)
            return
        _host.report_progress(_host.Progress(percent, step, message))

    def set_output_content_type(self, content_type):
        """Says what media type this job's output is in, e.g. ``"text/plain"``."""
        if _host is not None:
            _host.set_output_content_type(str(content_type))


def _is_json(content_type):
    essence = content_type.split(";", 1)[0].strip().lower()
    return (
        essence in ("", JSON, "text/json")
        or (essence.startswith("application/") and essence.endswith("+json"))
    )


def _decode(payload, content_type):
    if not _is_json(content_type):
        raise Reject(
            f"unsupported content type {content_type!r}: expected application/json "
            "(use a raw handler for other encodings)"
        )
    if not payload:
        return None
    try:
        return json.loads(bytes(payload))
    except (ValueError, UnicodeDecodeError) as e:
        raise Reject(f"invalid input: {e}") from None


def _encode(output):
    try:
        return json.dumps(output, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise Reject(f"invalid output: {e}") from None


def _context(job):
    return Context(
        job_type=job.job_type,
        id=job.id,
        queue=job.queue,
        attempt=job.attempt,
        content_type=job.content_type,
        metadata=job.metadata,
    )


def run(fn, job, raw=False):
    """Runs ``fn`` on one job and returns its output bytes; what the ``Handler``
    class :func:`export_handler` makes calls. :class:`Reject` and :class:`Retry`
    come back as they are; other exceptions are logged and propagate."""
    ctx = _context(job)
    try:
        if raw:
            output = fn(bytes(job.payload), ctx)
            if not isinstance(output, (bytes, bytearray)):
                raise Reject(
                    f"invalid output: a raw handler returns bytes, not {type(output).__name__}"
                )
            return bytes(output)
        data = _decode(job.payload, ctx.content_type)
        return _encode(fn(data, ctx))
    except (Reject, Retry):
        raise
    except BaseException as e:
        # Like the Rust SDK's panic hook: the job's log says what went wrong too,
        # not only the (capped) stderr the traceback goes to.
        where = traceback.extract_tb(e.__traceback__)
        at = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
        error(f"uncaught exception: {type(e).__name__}: {e}{at}")
        raise


def export_handler(fn, raw=False):
    """Makes ``fn`` the component's handler: returns the ``Handler`` class
    componentize-py exports. Assign it at the top level of your app module::

        Handler = jobbox_guest.export_handler(my_fn)

    ``fn(data, ctx)`` gets the decoded JSON payload and a :class:`Context` and returns
    the output to encode as JSON; with ``raw=True`` it gets and returns ``bytes``.
    """
    if _exports is None:

        class LocalHandler:
            """Outside WebAssembly there is nothing to export; this stands in."""

            def handle(self, job):
                return run(fn, job, raw)

        return LocalHandler

    class Handler(_exports.Handler):
        def handle(self, job):
            try:
                return run(fn, job, raw)
            except Reject as e:
                raise Err(_wit.HandlerError_Reject(e.message)) from None
            except Retry as e:
                raise Err(_wit.HandlerError_Retry(e.message)) from None

    return Handler
