"""``GET /v1/models/{name}/batches`` on the memory container: each input's run PENDING, SUCCEEDED, PARTIAL
or FAILED from its summary (a stale one is PENDING again), hostile summaries shown as FAILED and never a
500, newest first within ``?limit``, a bounded number of store calls, and only for the owner and admins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.deps import services
from chalicelib.core.ports import ListedObject, ObjectInfo
from chalicelib.memory.stores import MemoryArtifactStore
from chalicelib.services import batch as batch_module
from chalicelib.services import batch_runs
from tests.support import ADMIN_KEY, Api
from tests.unit import test_jobs_api

pytestmark = pytest.mark.unit
world = test_jobs_api.world  # the fixture: the memory container with iris deployed (a fake function)

HEADER = "sepal_length,sepal_width,petal_length,petal_width\n"
ROW = "5.1,3.5,1.4,0.2\n"


def put_input(world: dict[str, Any], name: str, data: bytes, at: str | None = None) -> ObjectInfo:
    data_store: MemoryArtifactStore = world["container"].data
    info = data_store.put(f"inputs/iris/{name}", data)
    if at is not None:
        data_store.modified[info.key] = at
    return info


def run(world: dict[str, Any], info: ObjectInfo) -> dict[str, Any]:
    done = services().jobs.batch.handle_object(info.key, info.etag)  # type: ignore[union-attr]
    assert done is not None
    return done


def put_summary(world: dict[str, Any], stem: str, doc: Any, at: str | None = None) -> None:
    data_store: MemoryArtifactStore = world["container"].data
    key = f"outputs/iris/{stem}.summary.json"
    data_store.put(key, doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    if at is not None:
        data_store.modified[key] = at


def batches(world: dict[str, Any], query: str = "", who: str = "alice") -> list[dict[str, Any]]:
    r = world[who].call("GET", f"/v1/models/iris/batches{query}")
    assert r.status_code == 200, r.body
    return list(r.json_body["batches"])


def test_an_input_is_pending_then_succeeded_then_pending_again_when_replaced(world: dict[str, Any]) -> None:
    assert batches(world) == []
    info = put_input(world, "day-1.csv", (HEADER + ROW * 3).encode())
    (pending,) = batches(world)
    assert pending["input"] == "inputs/iris/day-1.csv" and pending["status"] == "PENDING"
    assert pending["rows"] is None and pending["download_url"] is None and pending["updated_at"]

    summary = run(world, info)
    (done,) = batches(world)
    assert done["status"] == "SUCCEEDED" and (done["rows"], done["succeeded"], done["failed"]) == (3, 3, 0)
    assert done["error"] is None and done["seconds"] == summary["seconds"]
    assert done["cost"] == summary["cost"] and done["cost"]["billed_ms"] > 0
    assert done["output"] == "outputs/iris/day-1.jsonl"
    assert done["download_url"].startswith("memory://outputs/iris/day-1.jsonl?expires_in=")

    put_input(world, "day-1.csv", (HEADER + ROW * 4).encode())  # a new object: its summary is stale
    (stale,) = batches(world)
    assert stale["status"] == "PENDING" and stale["download_url"] is None


def test_a_run_with_a_bad_row_is_partial_and_one_that_could_not_run_failed(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(world, put_input(world, "mixed.csv", (HEADER + ROW + "1,2,3\n").encode(), "2026-01-01T00:00:01.000Z"))
    monkeypatch.setattr(batch_module, "MAX_INPUT_BYTES", 10)
    run(world, put_input(world, "huge.csv", (HEADER + ROW).encode(), "2026-01-01T00:00:02.000Z"))
    failed, partial = batches(world)  # the newer first (their summaries are written now)
    assert partial["input"] == "inputs/iris/mixed.csv" and partial["status"] == "PARTIAL"
    assert (partial["rows"], partial["succeeded"], partial["failed"]) == (2, 1, 1)
    assert partial["download_url"] and partial["error"] is None
    assert failed["input"] == "inputs/iris/huge.csv" and failed["status"] == "FAILED"
    assert "larger than the limit" in failed["error"] and failed["download_url"] is None


SUMMARY = {
    "input": "inputs/iris/x.csv", "etag": "?", "rows": 1, "succeeded": 1, "failed": 0, "error": None,
    "seconds": 0.5, "cost": {"billed_ms": 3, "usd": "0.0000001", "pico_usd": 100_000},
}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{" + b" " * (64 * 1024) + b"}", "over the 65536 bytes a summary may be"),
        (b'{"input": "inputs/iris/x.csv", ', "is not JSON: malformed JSON"),
        (b"\xff\xfe not text", "is not JSON"),
        (b"[" * 5000 + b"]" * 5000, "is not JSON: JSON nested deeper"),
        (b'"just a string"', "is not a batch summary: the document"),
        (json.dumps({**SUMMARY, "failed": -1}).encode(), "is not a batch summary: failed:"),
        (json.dumps({**SUMMARY, "seconds": "NaN"}).encode(), "is not a batch summary: seconds:"),
    ],
)
def test_a_summary_that_cannot_be_believed_is_failed_with_the_reason_never_a_500(
    world: dict[str, Any], body: bytes, reason: str
) -> None:
    info = put_input(world, "x.csv", (HEADER + ROW).encode())
    put_summary(world, "x", body)
    (shown,) = batches(world)
    assert shown["input"] == info.key and shown["status"] == "FAILED", shown
    assert reason in shown["error"] and "outputs/iris/x.summary.json" in shown["error"]
    assert shown["download_url"] is None


def test_the_download_is_of_the_inputs_results_never_a_key_the_summary_names(world: dict[str, Any]) -> None:
    info = put_input(world, "x.csv", (HEADER + ROW).encode())
    put_summary(world, "x", {**SUMMARY, "etag": info.etag, "output": "outputs/other-model/secret.jsonl"})
    (shown,) = batches(world)
    assert shown["status"] == "SUCCEEDED" and shown["output"] == "outputs/iris/x.jsonl"
    assert "secret" not in shown["download_url"]


def test_keys_the_store_refuses_are_failed_without_a_link_not_a_500(world: dict[str, Any]) -> None:
    import hashlib

    data_store: MemoryArtifactStore = world["container"].data
    key = "inputs/iris/bad\x07name.csv"  # S3 takes it; check_key refuses it, so put() would too
    summary = {**SUMMARY, "input": key, "etag": hashlib.md5(ROW.encode()).hexdigest()}
    for k, data in (
        (key, ROW.encode()),
        ("outputs/iris/bad\x07name.summary.json", json.dumps(summary).encode()),
    ):
        data_store.objects[k], data_store.modified[k] = data, "2026-01-01T00:00:00.000Z"
    (shown,) = batches(world)
    assert shown["status"] == "FAILED" and shown["download_url"] is None
    assert "is a key this store does not read" in shown["error"]


def test_a_summary_whose_input_is_gone_still_shows_and_one_naming_another_input_is_failed(
    world: dict[str, Any],
) -> None:
    put_summary(world, "gone", {**SUMMARY, "input": "inputs/iris/gone.jsonl"}, "2026-01-01T00:00:02.000Z")
    put_summary(world, "forged", {**SUMMARY, "input": "inputs/other/forged.csv"}, "2026-01-01T00:00:01.000Z")
    gone, forged = batches(world)
    assert gone["input"] == "inputs/iris/gone.jsonl" and gone["status"] == "SUCCEEDED"
    assert gone["download_url"].startswith("memory://outputs/iris/gone.jsonl")
    assert forged["input"] == "outputs/iris/forged.summary.json" and forged["status"] == "FAILED"
    assert "names an input that is not its own: 'inputs/other/forged.csv'" in forged["error"]


def test_newest_first_within_the_limit(world: dict[str, Any]) -> None:
    for i in (3, 1, 4, 0, 2):
        put_input(world, f"in-{i}.csv", ROW.encode(), f"2026-01-01T00:00:0{i}.000Z")
    put_input(world, "notes.txt", b"not a batch input", "2026-01-01T00:00:09.000Z")
    assert [b["input"] for b in batches(world)] == [f"inputs/iris/in-{i}.csv" for i in (4, 3, 2, 1, 0)]
    assert [b["input"] for b in batches(world, "?limit=2")] == [
        "inputs/iris/in-4.csv",
        "inputs/iris/in-3.csv",
    ]
    assert len(batches(world, "?limit=100")) == 5


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1e2", "٣", "", "00000000001"])
def test_a_bad_limit_is_a_400_with_its_pointer(world: dict[str, Any], limit: str) -> None:
    r = world["alice"].call("GET", f"/v1/models/iris/batches?limit={limit}")
    assert r.status_code == 400, (limit, r.body)
    assert r.json_body["errors"] == [{"pointer": "/limit", "message": "not an integer from 1 to 100"}]


def test_the_service_refuses_a_limit_out_of_range_too(world: dict[str, Any]) -> None:
    from chalicelib.core.errors import InvalidRequest

    owner = world["container"].accounts.get_account(world["container"].models.get_model("iris").owner)
    with pytest.raises(InvalidRequest):
        services().batches.for_model(owner, "iris", limit=0)


def test_only_the_owner_and_admins_see_them_a_grantee_and_a_stranger_get_the_plain_404(
    world: dict[str, Any],
) -> None:
    put_input(world, "day-1.csv", ROW.encode())
    bob = world["bob"]
    unknown = bob.call("GET", "/v1/models/no-such-model/batches")
    assert unknown.status_code == 404
    stranger = bob.call("GET", "/v1/models/iris/batches")
    assert (stranger.status_code, stranger.body) == (404, unknown.body)
    assert world["alice"].call("PUT", f"/v1/models/iris/grants/{world['bob_id']}").status_code == 200
    grantee = bob.call("GET", "/v1/models/iris/batches")
    assert (grantee.status_code, grantee.body) == (404, unknown.body)
    assert bob.call("GET", "/v1/models/Bad%20Name/batches").status_code == 404
    admin = Api(world["alice"].client, ADMIN_KEY)
    assert [b["input"] for b in batches({"admin": admin}, who="admin")] == ["inputs/iris/day-1.csv"]
    assert len(batches(world)) == 1


class Counting:
    """The data store, its listings and reads counted."""

    def __init__(self, inner: MemoryArtifactStore) -> None:
        self.inner = inner
        self.listed: list[tuple[str, int]] = []
        self.read: list[str] = []

    def list_objects(self, prefix: str, *, limit: int) -> list[ListedObject]:
        self.listed.append((prefix, limit))
        return self.inner.list_objects(prefix, limit=limit)

    def download(self, key: str, dest: Path, *, max_bytes: int) -> ObjectInfo:
        self.read.append(key)
        return self.inner.download(key, dest, max_bytes=max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_store_calls_are_bounded_two_listings_and_at_most_limit_summaries(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(8):
        info = put_input(world, f"in-{i}.csv", ROW.encode(), f"2026-01-01T00:00:0{i}.000Z")
        put_summary(world, f"in-{i}", {**SUMMARY, "input": info.key, "etag": info.etag}, info_at(i))
    counting = Counting(world["container"].data)
    monkeypatch.setattr(services().batches, "data", counting)
    shown = batches(world, "?limit=3")
    assert [b["input"] for b in shown] == [f"inputs/iris/in-{i}.csv" for i in (7, 6, 5)]
    assert all(b["status"] == "SUCCEEDED" for b in shown)
    assert counting.listed == [("outputs/iris/", 2 * batch_runs.SCAN), ("inputs/iris/", batch_runs.SCAN)]
    assert counting.read == [f"outputs/iris/in-{i}.summary.json" for i in (7, 6, 5)]


def info_at(i: int) -> str:
    return f"2026-01-01T00:01:0{i}.000Z"


def test_the_route_is_in_the_openapi_document(world: dict[str, Any]) -> None:
    doc = world["alice"].call("GET", "/openapi.json").json_body
    get = doc["paths"]["/v1/models/{name}/batches"]["get"]
    assert {"200", "400", "404"} <= set(get["responses"])
    assert "BatchRun" in doc["components"]["schemas"]


def test_the_cli_prints_a_line_per_run_newest_first_and_the_error_under_its_run(
    world: dict[str, Any],
) -> None:
    from click.testing import CliRunner

    from chalicelib.cli_jobs import batch_lines, batches_command

    assert "modelport batch" in batch_lines({"batches": []})[0]
    run(world, put_input(world, "day-1.csv", (HEADER + ROW + "1,2\n").encode(), "2026-01-01T00:00:01.000Z"))
    put_input(world, "day-2.csv", ROW.encode(), "2026-01-01T00:00:02.000Z")
    put_summary(world, "day-0", b"not json", "2026-01-01T00:00:00.000Z")

    answered = {"/v1/models/iris/batches?limit=3": batches(world, "?limit=3")}
    answered["/v1/models/iris/batches?limit=50"] = batches(world)

    class Client:  # the API's answers, fetched beforehand (its request log goes to stdout)
        def json(self, method: str, path: str) -> Any:
            assert method == "GET"
            return {"batches": answered[path]}

    result = CliRunner().invoke(batches_command, ["iris", "--limit", "3"], obj={"client": Client})
    assert result.exit_code == 0, result.output
    head, partial, pending, broken, error = result.output.splitlines()  # the run's summary is newest
    assert head.split()[:3] == ["input", "status", "rows"]
    assert partial.split()[:5] == ["inputs/iris/day-1.csv", "PARTIAL", "2", "1", "1"]
    assert pending.split()[:3] == ["inputs/iris/day-2.csv", "PENDING", "-"]
    assert broken.split()[:2] == ["outputs/iris/day-0.summary.json", "FAILED"]
    assert error.startswith("  error: outputs/iris/day-0.summary.json is not JSON")
    as_json = CliRunner().invoke(batches_command, ["iris", "--json"], obj={"client": Client})
    assert json.loads(as_json.output)["batches"][0]["download_url"].startswith("memory://")
    assert (
        CliRunner().invoke(batches_command, ["iris", "--limit", "0"], obj={"client": Client}).exit_code == 2
    )
