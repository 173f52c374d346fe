"""Asynchronous jobs through the API (Chalice's test client, the memory container): submit, follow,
list, cancel; per account; a bad request refused before it is queued; the runner's races."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.api.deps import services
from chalicelib.core.errors import Unavailable
from chalicelib.services import jobs as jobs_module
from tests.unit import test_invoke_api
from tests.unit.test_invoke_api import RECORD

world = test_invoke_api.world  # the fixture: the memory container, iris deployed on a fake function


def run_queued(world: dict[str, Any]) -> None:
    """What the jobs queue's runner does with each message."""
    for job_id in world["container"].job_queue.sent:
        services().jobs.handle_message(f'{{"job_id": "{job_id}"}}')


def test_a_job_is_queued_with_202_and_location_then_succeeds_with_its_answer(world: dict[str, Any]) -> None:
    alice = world["alice"]
    r = alice.call("POST", "/v1/models/iris/jobs", {"records": [RECORD]})
    assert r.status_code == 202, r.body
    job_id = r.json_body["job_id"]
    assert r.headers["Location"] == f"/v1/jobs/{job_id}" and r.json_body["status"] == "QUEUED"
    assert world["fake"].events == []  # nothing ran yet
    assert alice.call("GET", f"/v1/jobs/{job_id}").json_body["status"] == "QUEUED"

    run_queued(world)
    done = alice.call("GET", f"/v1/jobs/{job_id}").json_body
    assert done["status"] == "SUCCEEDED" and done["started_at"] and done["finished_at"]
    assert done["result"]["status"] == 200 and done["result"]["content_type"] == "application/json"
    assert done["result"]["body"]["predictions"][0][0]["label"] == "setosa"
    run_queued(world)  # a duplicate delivery runs nothing again
    assert len(world["fake"].events) == 1
    assert [j["job_id"] for j in alice.call("GET", "/v1/jobs").json_body["jobs"]] == [job_id]


def test_prefer_respond_async_on_invoke_answers_the_same_202(world: dict[str, Any]) -> None:
    r = world["alice"].call(
        "POST",
        "/v1/models/iris/versions/1/invoke",
        {"records": [RECORD]},
        headers={"Prefer": "respond-async"},
    )
    assert r.status_code == 202 and r.headers["Preference-Applied"] == "respond-async"
    assert r.json_body["version"] == 1


def test_a_bad_request_is_refused_before_it_is_queued(world: dict[str, Any]) -> None:
    r = world["alice"].call("POST", "/v1/models/iris/jobs", {"records": [{"sepal_length": "long"}]})
    assert r.status_code == 400 and world["container"].job_queue.sent == []
    assert world["alice"].call("POST", "/v1/models/nope/jobs", {"records": [RECORD]}).status_code == 404


def test_jobs_are_per_account(world: dict[str, Any]) -> None:
    job_id = world["alice"].call("POST", "/v1/models/iris/jobs", {"records": [RECORD]}).json_body["job_id"]
    assert world["bob"].call("GET", f"/v1/jobs/{job_id}").status_code == 404
    assert world["bob"].call("DELETE", f"/v1/jobs/{job_id}").status_code == 404
    assert world["bob"].call("GET", "/v1/jobs").json_body == {"jobs": []}
    assert world["alice"].call("GET", "/v1/jobs/job-nope").status_code == 404
    assert world["alice"].call("GET", "/v1/jobs/../accounts").status_code in (403, 404)


def test_a_queued_job_is_cancelled_and_then_never_runs(world: dict[str, Any]) -> None:
    alice = world["alice"]
    job_id = alice.call("POST", "/v1/models/iris/jobs", {"records": [RECORD]}).json_body["job_id"]
    r = alice.call("DELETE", f"/v1/jobs/{job_id}")
    assert r.status_code == 200 and r.json_body["status"] == "CANCELLED"
    run_queued(world)
    assert world["fake"].events == []
    again = alice.call("DELETE", f"/v1/jobs/{job_id}")
    assert again.status_code == 409 and "only a queued job" in again.json_body["message"]


def test_a_model_that_fails_fails_the_job_with_the_reason(world: dict[str, Any]) -> None:
    from chalicelib.core.errors import FunctionFailed

    world["fake"].fail = FunctionFailed("the model's function crashed")
    job_id = world["alice"].call("POST", "/v1/models/iris/jobs", {"records": [RECORD]}).json_body["job_id"]
    run_queued(world)
    done = world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body
    assert done["status"] == "FAILED" and "crashed" in done["error"]


def test_an_outage_puts_the_job_back_for_the_redelivery(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = world["alice"].call("POST", "/v1/models/iris/jobs", {"records": [RECORD]}).json_body["job_id"]
    world["fake"].fail = Unavailable("Lambda throttled")
    with pytest.raises(Unavailable):
        run_queued(world)
    assert world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body["status"] == "QUEUED"
    world["fake"].fail = None
    run_queued(world)
    assert world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body["status"] == "SUCCEEDED"


def test_a_large_answer_is_a_presigned_url(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_module, "INLINE_RESULT_BYTES", 10)
    job_id = world["alice"].call("POST", "/v1/models/iris/jobs", {"records": [RECORD]}).json_body["job_id"]
    run_queued(world)
    result = world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body["result"]
    assert result["url"].startswith(f"memory://jobs/{job_id}/result") and result["size_bytes"] > 10


def test_a_malformed_queue_message_is_dropped(world: dict[str, Any]) -> None:
    for body in ("not json", "[]", '{"job_id": 3}', '{"job_id": "job-unknown"}'):
        assert services().jobs.handle_message(body) is None


# --------------------------------------------------------------------------- calls past API Gateway's 29 s


def slow_model(world: dict[str, Any]) -> None:
    """iris again as ``slow``, with a 40 s timeout: a synchronous call of it may outlive the API's 29 s."""
    from tests.support import ROOT, bundle, deploy

    config = (ROOT / "examples/iris-onnx/modelport.yaml").read_text()
    config = config.replace("name: iris-onnx", "name: slow").replace("timeout_s: 10", "timeout_s: 40")
    world["container"].invoker.register("modelport-slow", world["fake"])
    assert (
        deploy(world["container"], world["alice"], "slow", bundle(config=config))["deployment"].state
        == "READY"
    )


def instant_runner(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The jobs queue, with a runner that takes each job as it is sent."""
    queue = world["container"].job_queue
    send = queue.send

    def send_and_run(job_id: str, **kwargs: Any) -> None:
        send(job_id, **kwargs)
        services().jobs.handle_message(f'{{"job_id": "{job_id}"}}')

    monkeypatch.setattr(queue, "send", send_and_run)
    return queue


def test_a_call_that_may_outlive_the_deadline_runs_as_a_job_and_answers_if_it_ends_in_time(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_model(world)
    queue = instant_runner(world, monkeypatch)
    r = world["alice"].call("POST", "/v1/models/slow/invoke", {"records": [RECORD]})
    assert r.status_code == 200, r.body
    assert r.json_body["predictions"][0][0]["label"] == "setosa"
    assert len(queue.sent) == 1  # it went as a job
    fast = world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]})  # 10 s: directly
    assert fast.status_code == 200 and len(queue.sent) == 1


def test_a_call_that_does_not_end_before_the_deadline_is_a_202_to_follow(world: dict[str, Any]) -> None:
    slow_model(world)
    services().jobs.sync_wait_s = 0.05  # no runner here: the job is still queued when the wait is over
    r = world["alice"].call("POST", "/v1/models/slow/invoke", {"records": [RECORD]})
    assert r.status_code == 202 and "Preference-Applied" not in r.headers  # not asked for: the deadline
    location = r.headers["Location"]
    run_queued(world)
    done = world["alice"].call("GET", location).json_body
    assert done["status"] == "SUCCEEDED" and done["result"]["body"]["predictions"][0][0]["label"] == "setosa"


def test_a_job_that_fails_in_time_answers_as_the_failed_call_would(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.errors import FunctionFailed

    slow_model(world)
    instant_runner(world, monkeypatch)
    world["fake"].fail = FunctionFailed("the model's function crashed")
    r = world["alice"].call("POST", "/v1/models/slow/invoke", {"records": [RECORD]})
    assert r.status_code == 502 and "crashed" in r.json_body["message"]


def test_a_job_refused_at_run_time_keeps_its_status(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.errors import FunctionTimedOut

    slow_model(world)
    instant_runner(world, monkeypatch)
    world["fake"].fail = FunctionTimedOut("the model's function timed out after 40 s")
    r = world["alice"].call("POST", "/v1/models/slow/invoke", {"records": [RECORD]})
    assert r.status_code == 504 and "timed out" in r.json_body["message"]  # as the synchronous call says
    (job,) = world["alice"].call("GET", "/v1/jobs").json_body["jobs"]
    done = world["alice"].call("GET", f"/v1/jobs/{job['job_id']}").json_body
    assert done["status"] == "FAILED" and done["result"]["status"] == 504
