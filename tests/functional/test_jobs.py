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


def s3(stack: LocalStack) -> Any:
    import boto3

    from chalicelib.local.stack import LOCAL_CREDENTIALS

    session = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS)
    return session.client("s3", endpoint_url=stack.endpoint_url)


def wait_for(client: Any, bucket: str, key: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return dict(client.head_object(Bucket=bucket, Key=key))
        except client.exceptions.ClientError:
            time.sleep(0.25)
    raise AssertionError(f"no s3://{bucket}/{key} after {timeout_s} s")


def test_a_150_row_csv_under_inputs_gives_150_lines_under_outputs_once(stack: LocalStack) -> None:
    client, bucket = s3(stack), stack.outputs["data_bucket"]
    header = "sepal_length,sepal_width,petal_length,petal_width\n"
    rows = "".join(f"{5 + i % 3},{3.0 + i % 2},{1.4 + i % 4},{0.2 + i % 3}\n" for i in range(150))
    client.put_object(Bucket=bucket, Key="inputs/iris-onnx/day-1.csv", Body=(header + rows).encode())
    first = wait_for(client, bucket, "outputs/iris-onnx/day-1.summary.json")
    lines = client.get_object(Bucket=bucket, Key="outputs/iris-onnx/day-1.jsonl")["Body"].read().splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["row"] for d in docs] == list(range(150)) and all("result" in d for d in docs)
    summary = json.loads(
        client.get_object(Bucket=bucket, Key="outputs/iris-onnx/day-1.summary.json")["Body"].read()
    )
    assert summary["rows"] == 150 and summary["failed"] == 0

    # the same object put again (a duplicate S3 event) and its notification sent twice (duplicate SQS
    # messages): the output is written once
    client.put_object(Bucket=bucket, Key="inputs/iris-onnx/day-1.csv", Body=(header + rows).encode())
    import boto3

    from chalicelib.local.stack import LOCAL_CREDENTIALS

    sqs = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS).client(
        "sqs", endpoint_url=stack.endpoint_url
    )
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {
        "key": "inputs/iris-onnx/day-1.csv", "eTag": summary["etag"], "size": 1}}}]}  # fmt: skip
    for _ in range(2):
        sqs.send_message(QueueUrl=stack.outputs["jobs_queue_url"], MessageBody=json.dumps(event))
    time.sleep(5)  # three deliveries' worth of the pump's polling
    again = client.head_object(Bucket=bucket, Key="outputs/iris-onnx/day-1.summary.json")
    assert again["LastModified"] == first["LastModified"] and again["ETag"] == first["ETag"]


def test_modelport_batch_uploads_waits_and_prints_the_jsonl(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from chalicelib.cli import cli
    from chalicelib.local.stack import LOCAL_CREDENTIALS

    for name, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(name.upper(), value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MODELPORT_ENDPOINT_URL", stack.endpoint_url)
    source = tmp_path / "few.jsonl"
    source.write_text("\n".join(json.dumps({"records": [FLOWER]}) for _ in range(3)) + "\n")
    ran = CliRunner().invoke(
        cli, ["batch", "iris-onnx", str(source), "--bucket", stack.outputs["data_bucket"]]
    )
    assert ran.exit_code == 0, ran.output
    assert "3 rows: 3 answered, 0 failed" in ran.stderr
    assert [json.loads(line)["row"] for line in ran.stdout.splitlines()] == [0, 1, 2]
