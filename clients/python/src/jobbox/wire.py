"""The wire format: MessagePack maps with named fields, RFC 3339 UTC timestamps.

Written exactly as the Rust writer (`client/src/wire.rs`) writes: `bin` for bytes, the
smallest integer encodings, string maps with sorted keys, optional fields that are
empty left out. `docs/wire-format.md` is the reference.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict

import msgpack


class WireError(ValueError):
    """A record could not be decoded (not MessagePack, not a map, a bad field)."""


def encode(record: Dict[str, Any]) -> bytes:
    """Encodes a record (a dict in field order) as a MessagePack map."""
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


def decode(data: bytes) -> Dict[str, Any]:
    """Decodes a MessagePack map; raises `WireError` for anything else."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as e:
        raise WireError(f"not a MessagePack record: {e}") from e
    if not isinstance(value, dict):
        raise WireError(f"expected a MessagePack map, got {type(value).__name__}")
    return value


def format_time(at: datetime) -> str:
    """`at` in UTC as jobbox writes it: `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z`.

    The fraction is left out when zero, else it has 3 or 6 digits, the fewest that
    represent the microseconds exactly (chrono's `SecondsFormat::AutoSi` with `Z`).
    """
    utc = _utc(at)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    micros = utc.microsecond
    if micros == 0:
        return text + "Z"
    if micros % 1000 == 0:
        return f"{text}.{micros // 1000:03d}Z"
    return f"{text}.{micros:06d}Z"


def format_time_millis(at: datetime) -> str:
    """`at` in UTC with exactly 3 fraction digits and `Z` (the `Nats-Schedule` header)."""
    utc = _utc(at)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


def format_time_offset(at: datetime) -> str:
    """`at` in UTC with `+00:00` (chrono's `to_rfc3339`, used in event details)."""
    return format_time(at)[:-1] + "+00:00"


def parse_time(text: str) -> datetime:
    """Parses an RFC 3339 timestamp with an offset into an aware UTC datetime.

    Nanosecond fractions are cut to microseconds (Python's resolution). A timestamp
    without an offset is refused, as jobbox refuses it.
    """
    if not isinstance(text, str):
        raise WireError(f"a timestamp must be a string, not {type(text).__name__}")
    value = text.strip().replace(" ", "T", 1)
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # Cut a fraction longer than 6 digits (fromisoformat reads at most microseconds).
    dot = value.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(value) and value[end].isdigit():
            end += 1
        digits = value[dot + 1 : end][:6].ljust(6, "0")
        value = value[: dot + 1] + digits + value[end:]
    try:
        at = datetime.fromisoformat(value)
    except ValueError as e:
        raise WireError(f"{text[:64]!r} is not an RFC 3339 timestamp: {e}") from e
    if at.tzinfo is None:
        raise WireError(f"timestamp {text[:64]!r} has no UTC offset")
    return at.astimezone(timezone.utc)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no time zone: use datetime.now(timezone.utc)")
    return at.astimezone(timezone.utc)
