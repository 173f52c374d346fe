"""One contract for the log reader, run against the in-memory twin and the CloudWatch Logs adapter (moto
server): the newest lines of a window, oldest first; a term narrows them; a missing group has none."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.aws.logs import CloudWatchLogReader
from chalicelib.core.errors import InvalidRequest
from chalicelib.core.ports import LogReader
from chalicelib.memory.logs import MemoryLogReader

NOW = 1_796_300_000_000
Write = Callable[[str, list[tuple[int, str]]], None]


@pytest.fixture(params=["memory", pytest.param("cloudwatch", marks=pytest.mark.functional)])
def logs(request: pytest.FixtureRequest) -> Iterator[tuple[LogReader, Write]]:
    if request.param == "memory":
        twin = MemoryLogReader()

        def write_twin(group: str, events: list[tuple[int, str]]) -> None:
            for at, message in events:
                twin.write(group, at, message)

        yield twin, write_twin
        return
    session = request.getfixturevalue("aws_session")
    client: Any = session.client("logs", endpoint_url=request.getfixturevalue("moto_server"))
    streams = itertools.count()

    def write_cloudwatch(group: str, events: list[tuple[int, str]]) -> None:
        if not client.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
            client.create_log_group(logGroupName=group)
        stream = f"2026/12/03/[$LATEST]{next(streams)}"  # a stream per write, as cold starts make
        client.create_log_stream(logGroupName=group, logStreamName=stream)
        client.put_log_events(
            logGroupName=group, logStreamName=stream,
            logEvents=[{"timestamp": at, "message": message} for at, message in sorted(events)],
        )  # fmt: skip

    yield CloudWatchLogReader(client), write_cloudwatch


def group() -> str:
    return f"/aws/lambda/modelport-t{uuid.uuid4().hex[:10]}"


def read(reader: LogReader, name: str, **given: Any) -> list[tuple[int, str]]:
    options: dict[str, Any] = {"since_ms": NOW - 3_600_000, "until_ms": NOW, "term": None, "limit": 100}
    options.update(given)
    return [(e.timestamp_ms, e.message) for e in reader.read(name, **options)]


def test_the_newest_lines_of_the_window_oldest_first(logs: tuple[LogReader, Write]) -> None:
    reader, write = logs
    name = group()
    write(name, [(NOW - 5_000, "b"), (NOW - 7_200_000, "too old"), (NOW + 5_000, "too new")])
    write(name, [(NOW - 9_000, "a"), (NOW - 1_000, "c")])
    assert read(reader, name) == [(NOW - 9_000, "a"), (NOW - 5_000, "b"), (NOW - 1_000, "c")]
    assert read(reader, name, limit=2) == [(NOW - 5_000, "b"), (NOW - 1_000, "c")]


def test_lines_older_than_the_last_minute_are_found_back_to_the_start(logs: tuple[LogReader, Write]) -> None:
    reader, write = logs
    name = group()
    events = [(NOW - m * 60_000 - 1, f"m{m}") for m in (0, 3, 20, 59)]
    write(name, events)
    assert read(reader, name) == sorted(events)
    assert read(reader, name, limit=3) == sorted(events)[1:]


def test_a_term_keeps_only_the_lines_holding_it(logs: tuple[LogReader, Write]) -> None:
    reader, write = logs
    name = group()
    trace = "1-6762a3f1-0123456789abcdef01234567"
    write(
        name,
        [(NOW - 3, f'{{"trace_id":"{trace}"}}'), (NOW - 2, "START RequestId"), (NOW - 1, f"x {trace} y")],
    )
    assert [m for _, m in read(reader, name, term=trace)] == [f'{{"trace_id":"{trace}"}}', f"x {trace} y"]
    assert read(reader, name, term="1-00000000-000000000000000000000000") == []


def test_a_group_nobody_wrote_to_has_no_lines(logs: tuple[LogReader, Write]) -> None:
    reader, _ = logs
    assert read(reader, group()) == []
    assert read(reader, group(), term="iris-onnx") == []


@pytest.mark.parametrize("term", ['" OR "', "a b", "", "x" * 65, "{$.level = ERROR}"])
def test_a_term_that_is_not_a_token_is_refused_before_any_call(
    logs: tuple[LogReader, Write], term: str
) -> None:
    reader, _ = logs
    with pytest.raises(InvalidRequest):
        read(reader, group(), term=term)
