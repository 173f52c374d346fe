"""Event-driven batch on the memory container: rows in order with their results or errors, the summary
written last, a repeated event doing nothing, inputs that are not batch inputs ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.deps import services
from chalicelib.services import batch as batch_module
from chalicelib.services.batch import output_keys
from tests.unit import test_jobs_api

pytestmark = pytest.mark.unit
world = test_jobs_api.world  # the fixture: the memory container with iris deployed (a fake function)

HEADER = "sepal_length,sepal_width,petal_length,petal_width\n"


def s3_event(key: str, etag: str = "e1") -> str:
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "data"}, "object": {"key": key, "eTag": etag, "size": 1}},
    }
    return json.dumps({"Records": [record]})


def read(container: Any, key: str, tmp_path: Path) -> bytes:
    path = tmp_path / "out"
    container.data.download(key, path, max_bytes=10**8)
    return path.read_bytes()


def test_keys_map_inputs_to_outputs() -> None:
    assert output_keys("inputs/iris-onnx/day-1.csv") == (
        "iris-onnx",
        "outputs/iris-onnx/day-1.jsonl",
        "outputs/iris-onnx/day-1.summary.json",
    )
    assert output_keys("inputs/iris/2026/12/a.jsonl")[1] == "outputs/iris/2026/12/a.jsonl"  # type: ignore[index]
    for key in (
        "uploads/iris/x.csv",
        "inputs/x.csv",
        "inputs/Bad Name/x.csv",
        "inputs/iris/x.exe",
        "inputs/iris/../x.csv",
        "inputs/iris/a\x01b.csv",  # S3 takes it; no summary could be written beside it
    ):
        assert output_keys(key) is None, key


def test_a_csv_is_inferred_row_by_row_in_order_and_a_bad_row_loses_nothing(
    world: dict[str, Any], tmp_path: Path
) -> None:
    container = world["container"]
    rows = ["5.1,3.5,1.4,0.2"] * 150
    rows.insert(10, "1,2,3")  # three columns: refused by the protocol, the others still run
    container.data.put("inputs/iris/day-1.csv", (HEADER + "\n".join(rows) + "\n").encode())
    (summary,) = services().jobs.batch.handle_message(s3_event("inputs/iris/day-1.csv"))  # type: ignore[union-attr]
    lines = [json.loads(x) for x in read(container, "outputs/iris/day-1.jsonl", tmp_path).splitlines()]
    assert [line["row"] for line in lines] == list(range(151))
    assert "result" in lines[0] and lines[0]["result"]["predictions"][0][0]["label"] == "setosa"
    assert "columns" in lines[10]["error"] and "result" in lines[150]
    assert summary["rows"] == 151 and summary["failed"] == 1 and summary["succeeded"] == 150
    assert summary["cost"]["billed_ms"] >= 150 and summary["cost"]["pico_usd"] > 150 * 200_000  # per row
    owner = container.accounts.get_account(container.models.get_model("iris").owner)
    used = services().usage.usage(owner)["total"]  # the owner's, as whom the rows ran
    assert (used["invocations"], used["rejected"]) == (150, 1)
    stored = json.loads(read(container, "outputs/iris/day-1.summary.json", tmp_path))
    assert stored["etag"] == "e1" and stored["output"] == "outputs/iris/day-1.jsonl"


def test_a_repeated_event_writes_nothing_and_a_new_object_is_done_again(world: dict[str, Any]) -> None:
    container = world["container"]
    container.data.put(
        "inputs/iris/a.jsonl",
        json.dumps({"records": [dict.fromkeys(HEADER.strip().split(","), 1.0)]}).encode() + b"\n",
    )
    jobs = services().jobs
    assert jobs.batch is not None
    assert len(jobs.batch.handle_message(s3_event("inputs/iris/a.jsonl"))) == 1
    calls = len(world["fake"].events)
    assert jobs.batch.handle_message(s3_event("inputs/iris/a.jsonl")) == []  # the same object again
    assert len(world["fake"].events) == calls
    assert len(jobs.batch.handle_message(s3_event("inputs/iris/a.jsonl", etag="e2"))) == 1  # replaced


def test_through_the_jobs_queue_and_for_unknown_models(world: dict[str, Any], tmp_path: Path) -> None:
    container = world["container"]
    container.data.put("inputs/nope/x.csv", (HEADER + "5.1,3.5,1.4,0.2\n").encode())
    services().jobs.handle_message(s3_event("inputs/nope/x.csv"))  # as the queue's runner gets it
    summary = json.loads(read(container, "outputs/nope/x.summary.json", tmp_path))
    assert summary["output"] is None and "nope" in summary["error"]
    assert services().jobs.handle_message(json.dumps({"Event": "s3:TestEvent"})) is None


def test_inputs_are_bounded(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(batch_module, "MAX_INPUT_BYTES", 10)
    world["container"].data.put("inputs/iris/big.csv", (HEADER + "5.1,3.5,1.4,0.2\n").encode())
    (summary,) = services().jobs.batch.handle_message(s3_event("inputs/iris/big.csv"))  # type: ignore[union-attr]
    assert summary["output"] is None and "larger than" in summary["error"]
