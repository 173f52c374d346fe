"""The in-memory twin of the log reader: groups of (timestamp, line), written by tests as Lambda would."""

from __future__ import annotations

import threading

from chalicelib.core.ports import LogEvent, check_log_term


class MemoryLogReader:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.groups: dict[str, list[LogEvent]] = {}

    def write(self, group: str, timestamp_ms: int, message: str) -> None:
        with self._lock:
            self.groups.setdefault(group, []).append(
                LogEvent(group=group, timestamp_ms=timestamp_ms, message=message)
            )

    def read(
        self, group: str, *, since_ms: int, until_ms: int, term: str | None, limit: int
    ) -> list[LogEvent]:
        check_log_term(term)
        with self._lock:
            events = list(self.groups.get(group, ()))
        events = [
            e
            for e in sorted(events, key=lambda e: e.timestamp_ms)
            if since_ms <= e.timestamp_ms <= until_ms and (term is None or term in e.message)
        ]
        return events[-limit:] if limit > 0 else []
