"""Asynchronous jobs on the local stack, over HTTP with real containers: the API queues the job on SQS
(moto), the event pump hands it to the app's job runner, which invokes the model's function and keeps
the answer in S3; the client follows ``Location`` until the job is done."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chalicelib.client import Client, Connection, deploy
from chalicelib.local.stack import LocalStack
from tests.functional.test_local_stack import EXAMPLES, _engine_answers

pytestmark = [pytest.mark.functional, pytest.mark.slow]

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    launcher = "container" if _engine_answers() else "process"
    if launcher == "process" and os.environ.get("CI"):
        pytest.fail("CI must have a docker engine (.ci/run starts dockerd)")
    running = LocalStack(edge_port=0, api_port=0, launcher=launcher, registry=False).start()
    admin = Client(Connection(running.api_url, running.admin_key, running.endpoint_url))
    outcome = deploy(admin, EXAMPLES / "iris-onnx")
    assert outcome.status == "READY", outcome.reason
    yield running
    running.stop()


def call(stack: LocalStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {stack.admin_key}", **kwargs.pop("headers", {})}
    return requests.request(method, stack.api_url.rstrip("/") + path, headers=headers, timeout=60, **kwargs)


def follow(stack: LocalStack, location: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc: dict[str, Any] = call(stack, "GET", location).json()
        if doc["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return doc
        time.sleep(0.2)
    raise AssertionError(f"{location} did not finish in {timeout_s} s")


def test_an_async_job_answers_what_the_sync_call_answers(stack: LocalStack) -> None:
    body = {"records": [FLOWER, FLOWER]}
    sync = call(stack, "POST", "/v1/models/iris-onnx/invoke", json=body)
    assert sync.status_code == 200, sync.text
    submitted = call(
        stack, "POST", "/v1/models/iris-onnx/invoke", json=body, headers={"Prefer": "respond-async"}
    )
    assert submitted.status_code == 202, submitted.text
    done = follow(stack, submitted.headers["Location"])
    assert done["status"] == "SUCCEEDED", done
    assert done["result"]["status"] == 200
    assert done["result"]["body"]["predictions"] == sync.json()["predictions"]
    listed = call(stack, "GET", "/v1/jobs").json()["jobs"]
    assert submitted.json()["job_id"] in [j["job_id"] for j in listed]


def test_a_job_the_model_refuses_ends_failed_with_the_reason(stack: LocalStack) -> None:
    refused = call(stack, "POST", "/v1/models/iris-onnx/jobs", json={"records": [{"sepal_length": "x"}]})
    assert refused.status_code == 400  # checked before it is queued
    png = (EXAMPLES / "digits-onnx" / "samples" / "digit-7.png").read_bytes()
    wrong_type = call(
        stack, "POST", "/v1/models/iris-onnx/jobs", data=png, headers={"Content-Type": "image/png"}
    )
    assert wrong_type.status_code == 415


def test_the_cli_runs_a_job_follows_it_and_lists_it(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from chalicelib.cli import cli

    monkeypatch.setenv("MODELPORT_API_URL", stack.api_url)
    monkeypatch.setenv("MODELPORT_API_KEY", stack.admin_key)
    runner = CliRunner()
    ran = runner.invoke(cli, ["invoke", "iris-onnx", "--async", "--json", json.dumps({"records": [FLOWER]})])
    assert ran.exit_code == 0, ran.output
    assert "queued" in ran.stderr and "SUCCEEDED" in ran.stderr
    assert json.loads(ran.stdout)["predictions"][0][0]["label"] == "setosa"
    job_id = ran.stderr.split("202 job ", 1)[1].split()[0]
    listed = runner.invoke(cli, ["jobs"])
    assert listed.exit_code == 0 and job_id in listed.stdout
    shown = runner.invoke(cli, ["jobs", job_id])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["predictions"]
    gone = runner.invoke(cli, ["jobs", "job-nope"])
    assert gone.exit_code != 0 and "no job" in gone.output


def test_a_jobs_webhook_arrives_signed_and_verifiable(stack: LocalStack) -> None:
    from standardwebhooks import Webhook

    from tests.unit.test_webhooks import Receiver

    receiver = Receiver()
    try:
        submitted = call(
            stack, "POST", "/v1/models/iris-onnx/jobs", json={"records": [FLOWER]},
            params={"webhook": receiver.url},
        )  # fmt: skip
        assert submitted.status_code == 202, submitted.text
        done = follow(stack, submitted.headers["Location"])
        deadline = time.monotonic() + 30  # the job is saved done just before its webhook goes
        while done["webhook"]["status"] == "PENDING" and time.monotonic() < deadline:
            time.sleep(0.1)
            done = call(stack, "GET", submitted.headers["Location"]).json()
        assert done["status"] == "SUCCEEDED" and done["webhook"]["status"] == "DELIVERED", done
        ((headers, body),) = receiver.got
        secret = call(stack, "GET", "/v1/webhook-secret").json()["secret"]
        event = Webhook(secret).verify(body, headers)
        assert event["data"]["job_id"] == done["job_id"] == headers["webhook-id"]
        assert event["data"]["result"]["body"]["predictions"][0][0]["label"] == "setosa"
    finally:
        receiver.server.shutdown()
