"""The CloudWatch Logs adapter of the log reader: one request's lines (its trace id) or a model's newest.

``FilterLogEvents`` answers oldest first, so the newest lines are found by looking back in windows that
grow fourfold from the last minute, each read for at most ``PAGES`` pages: the calls per read are bounded
whatever a function logged. The term is matched as a quoted filter-pattern term; only a token of letters,
digits and ``-_.`` is ever sent (a trace id, a model name), so no caller's text becomes a pattern.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws.outage import translates_outages
from chalicelib.core.errors import Unavailable
from chalicelib.core.ports import LogEvent, check_log_term

LogsClient = Any
"""A low-level ``boto3.client("logs")``; typed ``Any`` because boto3 ships no stubs."""

PAGES = 3
FIRST_WINDOW_MS = 60_000


@translates_outages
class CloudWatchLogReader:
    def __init__(self, client: LogsClient) -> None:
        self.client = client

    def read(
        self, group: str, *, since_ms: int, until_ms: int, term: str | None, limit: int
    ) -> list[LogEvent]:
        check_log_term(term)
        found: list[LogEvent] = []
        end, span = until_ms, FIRST_WINDOW_MS
        while end >= since_ms and len(found) < limit:
            start = max(since_ms, end - span + 1)
            window = self._window(group, start, end, term)
            if window is None:
                return []  # no such group: nothing logged there yet
            found = window + found
            end, span = start - 1, span * 4
        return found[-limit:]

    def _window(self, group: str, start: int, end: int, term: str | None) -> list[LogEvent] | None:
        """The events of ``[start, end]``, oldest first (the first ``PAGES`` pages of them)."""
        kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start, "endTime": end}
        if term is not None:
            kwargs["filterPattern"] = f'"{term}"'
        events: list[LogEvent] = []
        for _ in range(PAGES):
            try:
                page = self.client.filter_log_events(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "ResourceNotFoundException":
                    return None
                if code in ("ThrottlingException", "LimitExceededException"):
                    raise Unavailable(
                        "CloudWatch Logs is throttling reads", hint="try again in a few seconds"
                    ) from exc
                raise
            events.extend(
                LogEvent(group=group, timestamp_ms=int(e["timestamp"]), message=str(e["message"]))
                for e in page.get("events", [])
            )
            token = page.get("nextToken")
            if not token:
                break
            kwargs["nextToken"] = token
        events.sort(key=lambda e: e.timestamp_ms)
        return events
