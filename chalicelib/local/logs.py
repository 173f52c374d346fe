"""Function output to CloudWatch Logs, as Lambda ships it, so ``modelport logs`` reads the local stack's
functions as it reads deployed ones."""

from __future__ import annotations

import logging
import queue
import threading
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("modelport.local.stack")
LAMBDA_LOGGER = "modelport.local.lambda"
"""``<this>.<function>``: a function's output, shipped to ``/aws/lambda/<function>``."""
STATES_LOGGER = "modelport.local.states"
"""``<this>.<state machine>``: an execution's log, shipped to ``/aws/vendedlogs/states/<state machine>``."""


class LogShipper(logging.Handler):
    """The emulator's function output (logger ``modelport.local.lambda.<function>``) to CloudWatch Logs,
    as Lambda ships it: group ``/aws/lambda/<function>``, a stream per day, flushed every ``every_s``; and
    the local state machines' execution lines (``modelport.local.states.<name>``) to
    ``/aws/vendedlogs/states/<name>``."""

    def __init__(self, logs_client: Any, every_s: float = 0.5) -> None:
        super().__init__(logging.DEBUG)
        self.client = logs_client
        self.every_s = every_s
        self.pending: queue.SimpleQueue[tuple[str, int, str]] = queue.SimpleQueue()
        self.known: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(STATES_LOGGER + "."):
            group = "/aws/vendedlogs/states/" + record.name.removeprefix(STATES_LOGGER + ".")
        else:
            function = record.name.removeprefix(LAMBDA_LOGGER).lstrip(".")
            if not function:
                return
            group = f"/aws/lambda/{function}"
        self.pending.put((group, int(record.created * 1000), record.getMessage()))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        batches: dict[str, list[dict[str, Any]]] = {}
        while True:
            try:
                function, at, message = self.pending.get_nowait()
            except queue.Empty:
                break
            batches.setdefault(function, []).append({"timestamp": at, "message": message})
        for group, events in batches.items():
            stream = datetime.now(UTC).strftime("%Y/%m/%d/[local]modelport")
            try:
                self._ensure(group, stream)
                events.sort(key=lambda e: e["timestamp"])
                for start in range(0, len(events), 1000):
                    self.client.put_log_events(
                        logGroupName=group, logStreamName=stream, logEvents=events[start : start + 1000]
                    )
            except Exception:  # logs are best effort: never take the stack down with them
                log.debug("could not ship %d log lines to %s", len(events), group, exc_info=True)

    def _ensure(self, group: str, stream: str) -> None:
        from botocore.exceptions import ClientError

        wanted: list[tuple[tuple[str, str], str, dict[str, str]]] = [
            ((group, ""), "create_log_group", {"logGroupName": group}),
            ((group, stream), "create_log_stream", {"logGroupName": group, "logStreamName": stream}),
        ]
        for key, operation, args in wanted:
            if key in self.known:
                continue
            try:
                getattr(self.client, operation)(**args)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                    raise
            self.known.add(key)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        super().close()
