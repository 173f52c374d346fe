"""The one text form of a moment in the records: ISO-8601 UTC with milliseconds, ``...T06:10:50.123Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(moment: datetime) -> str:
    """``moment`` (in UTC) as the records write it."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """Now, as the records write it: the default ``Clock`` of every service."""
    return utc_text(datetime.now(UTC))


def parse_utc(text: str) -> datetime:
    """A moment the records wrote (``Z`` or an offset)."""
    return datetime.fromisoformat(text)
