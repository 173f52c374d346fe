"""Payloads by reference through the API (memory container): an upload named by ``input_url`` runs as a
job, only for the account that made it; an answer the function stored is a 303 to it (or a job's URL)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from chalicelib.core.wire import reply
from chalicelib.services import jobs as jobs_module
from tests.unit import test_invoke_api
from tests.unit.test_invoke_api import RECORD
from tests.unit.test_jobs_api import run_queued

pytestmark = pytest.mark.unit

world = test_invoke_api.world


def _key(url: str) -> str:
    """The object a memory:// URL names."""
    return urlsplit(url).netloc + urlsplit(url).path


class StoringIris:
    """A model function that reads ``body_url`` and stores its answer when told to (as the runtime does)."""

    def __init__(self, data: Any, *, answer_bytes: int = 0) -> None:
        self.data = data
        self.answer_bytes = answer_bytes
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        body = self.data.objects[_key(event["body_url"])] if "body_url" in event else event["body"].encode()
        rows = json.loads(body)["records"]
        answer = json.dumps({"rows": len(rows), "pad": "x" * self.answer_bytes})
        spill = event.get("spill")
        if spill is not None and len(answer) > spill["limit"]:
            self.data.objects[_key(spill["reply"])] = answer.encode()
            return {**reply(200, ""), "body_stored": len(answer)}
        return dict(reply(200, answer))


def _function(world: dict[str, Any], **kwargs: Any) -> StoringIris:
    fake = StoringIris(world["container"].data, **kwargs)
    world["container"].invoker.register("modelport-iris", fake)
    return fake


def _upload(world: dict[str, Any], who: str, data: bytes) -> str:
    r = world[who].call("POST", "/v1/uploads")
    assert r.status_code == 201, r.body
    doc = r.json_body
    assert doc["input_url"].startswith("s3://modelport-data/uploads/") and doc["max_bytes"] >= 1024**3
    world["container"].data.objects[doc["upload"]["fields"]["key"]] = data  # what the POST would store
    return str(doc["input_url"])


def test_an_upload_runs_as_a_job_by_reference(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_module, "INLINE_REQUEST_BYTES", 10)
    fake = _function(world)
    url = _upload(world, "alice", json.dumps({"records": [RECORD] * 3}).encode())
    r = world["alice"].call("POST", f"/v1/models/iris/jobs?input_url={url}")
    assert r.status_code == 202, r.body
    run_queued(world)
    done = world["alice"].call("GET", f"/v1/jobs/{r.json_body['job_id']}").json_body
    assert done["status"] == "SUCCEEDED" and done["result"]["body"]["rows"] == 3
    event = fake.events[-1]
    assert event["body"] == "" and event["body_bytes"] > 10 and "uploads/" in event["body_url"]
    assert "spill" in event  # a job's answer may be stored


def test_an_input_url_must_be_the_callers_own_upload(world: dict[str, Any]) -> None:
    url = _upload(world, "alice", b'{"records": []}')
    jobs = "/v1/models/iris/jobs?input_url="
    assert world["alice"].call("PUT", f"/v1/models/iris/grants/{world['bob_id']}").status_code == 200
    assert world["bob"].call("POST", jobs + url).status_code == 404  # alice's, not bob's
    for bad in ("https://example.com/x", "s3://other-bucket/uploads/x", "file:///etc/passwd"):
        r = world["alice"].call("POST", jobs + bad)
        assert r.status_code == 400 and "POST /v1/uploads" in r.json_body["message"], bad
    missing = url.rsplit("/", 1)[0] + "/" + "0" * 24
    assert world["alice"].call("POST", jobs + missing).status_code == 404
    both = world["alice"].call("POST", jobs + url, {"records": [RECORD]})
    assert both.status_code == 400 and "not both" in both.json_body["message"]
    assert world["container"].job_queue.sent == []


def test_an_answer_the_function_stored_is_a_303_to_it(world: dict[str, Any]) -> None:
    fake = _function(world, answer_bytes=7 * 1024 * 1024)
    big = {"records": [RECORD] * 8000}  # over 512 KB: the call gets a place for a large answer
    r = world["alice"].call("POST", "/v1/models/iris/invoke", big)
    assert r.status_code == 303, r.body
    location = r.headers["Location"]
    assert r.json_body["url"] == location and r.json_body["size_bytes"] > 7 * 1024 * 1024
    assert json.loads(world["container"].data.objects[_key(location)])["rows"] == 8000
    fake.answer_bytes = 0
    small = world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]})
    assert small.status_code == 200 and "spill" not in fake.events[-1]  # the hot path presigns nothing


def test_a_jobs_stored_answer_is_its_result(world: dict[str, Any]) -> None:
    _function(world, answer_bytes=7 * 1024 * 1024)
    job_id = world["alice"].call("POST", "/v1/models/iris/jobs", {"records": [RECORD]}).json_body["job_id"]
    run_queued(world)
    result = world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body["result"]
    assert (
        result["url"].startswith(f"memory://jobs/{job_id}/result") and result["size_bytes"] > 7 * 1024 * 1024
    )
