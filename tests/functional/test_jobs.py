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
SYNC_WAIT_S = 4.0
"""How long this stack waits for a call that may outlive API Gateway's 29 s (25 s by default)."""


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    launcher = "container" if _engine_answers() else "process"
    if launcher == "process" and os.environ.get("CI"):
        pytest.fail("CI must have a docker engine (.ci/run starts dockerd)")
    running = LocalStack(
        edge_port=0, api_port=0, launcher=launcher, registry=False, settings={"sync_wait_s": SYNC_WAIT_S}
    ).start()
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


# --------------------------------------------------------------------------- payloads by reference


def noise_png(side: int, seed: int = 0) -> bytes:
    """An RGB PNG of random pixels: it does not compress, so ``side`` fixes its size (3 bytes a pixel)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """digits-onnx as it is (fused: image requests) and the same model deployed chained."""
    import shutil

    admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
    fused = deploy(admin, EXAMPLES / "digits-onnx")
    assert fused.status == "READY", fused.reason
    chained_dir = tmp_path_factory.mktemp("chained") / "digits-chained"
    shutil.copytree(EXAMPLES / "digits-onnx", chained_dir)
    config = (chained_dir / "modelport.yaml").read_text().replace("name: digits-onnx", "name: digits-chained")
    (chained_dir / "modelport.yaml").write_text(config + "pipeline: chained\n")
    chained = deploy(admin, chained_dir)
    assert chained.status == "READY", chained.reason
    assert chained.config is not None and chained.config["deployment"]["mode"] == "chained"
    return {"admin": admin}


def test_a_50_mb_input_by_reference_runs_as_a_job(stack: LocalStack, digits: dict[str, Any]) -> None:
    from chalicelib.client import upload_input

    picture = noise_png(4200)
    assert len(picture) > 50 * 1024 * 1024
    input_url = upload_input(digits["admin"], picture)  # a presigned POST straight to S3
    submitted = call(
        stack, "POST", "/v1/models/digits-onnx/jobs", params={"input_url": input_url},
        headers={"Content-Type": "image/png"},
    )  # fmt: skip
    assert submitted.status_code == 202, submitted.text
    done = follow(stack, submitted.headers["Location"])
    assert done["status"] == "SUCCEEDED", done
    predictions = done["result"]["body"]["predictions"]
    assert len(predictions[0]) == 3 and {p["label"] for p in predictions[0]} <= set("0123456789")
    other = call(stack, "POST", "/v1/models/digits-onnx/jobs", params={"input_url": "https://example.com/x"})
    assert other.status_code == 400  # only this account's uploads are references


def test_a_chained_image_pipeline_takes_a_picture_past_256_kb_by_reference(
    stack: LocalStack, digits: dict[str, Any]
) -> None:
    """digits-chained: its event would be over the 256 KB a state carries, so the picture goes through
    S3; the answer is the fused model's."""
    from chalicelib.client import invoke

    picture = noise_png(600, seed=1)
    assert len(picture) > 1024 * 1024
    answers = [
        invoke(digits["admin"], name, picture, content_type="image/png", accept="application/json").json()
        for name in ("digits-chained", "digits-onnx")
    ]
    assert answers[0]["predictions"] == answers[1]["predictions"]


def test_a_chained_answer_past_the_limits_crosses_every_hop_through_s3(
    stack: LocalStack, digits: dict[str, Any]
) -> None:
    """iris-onnx (chained on shared stages), 20,000 rows: the request (320 KB), both documents between
    the stages and the 3 MB answer are each over a state's 256 KB; the API answers 303 to the stored
    answer, which the client fetches."""
    from chalicelib.client import invoke

    csv = b"5.1,3.5,1.4,0.2\n" * 20_000
    raw = call(stack, "POST", "/v1/models/iris-onnx/invoke", data=csv, allow_redirects=False,
               headers={"Content-Type": "text/csv", "Accept": "application/json"})  # fmt: skip
    assert raw.status_code == 303, raw.text
    assert raw.json()["size_bytes"] > 2 * 1024 * 1024 and raw.headers["Location"] == raw.json()["url"]
    answer = invoke(digits["admin"], "iris-onnx", csv, content_type="text/csv", accept="application/json")
    predictions = answer.json()["predictions"]
    assert len(predictions) == 20_000 and predictions[-1][0]["label"] == "setosa"


# --------------------------------------------------------------------------- past API Gateway's 29 s


SLOW_ECHO_CONFIG = """name: slow-echo
framework: python
artifacts: [predict.py]
environment: {memory_mb: 256, timeout_s: 60}
"""


def test_a_call_that_may_outlive_the_apis_29_s_answers_in_time_or_202(
    stack: LocalStack, tmp_path: Any
) -> None:
    from tests.functional.local_stack import ECHO_PREDICT

    (tmp_path / "predict.py").write_text(ECHO_PREDICT, encoding="utf-8")
    (tmp_path / "modelport.yaml").write_text(SLOW_ECHO_CONFIG, encoding="utf-8")
    admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
    assert deploy(admin, tmp_path).status == "READY"
    quick = call(stack, "POST", "/v1/models/slow-echo/invoke", json={"output": [1.0], "sleep_s": 0})
    assert quick.status_code == 200 and quick.json() == {"output": [1.0]}  # ended in time: as a sync call
    began = time.monotonic()
    slow = call(stack, "POST", "/v1/models/slow-echo/invoke", json={"output": [2.0], "sleep_s": 8})
    waited = time.monotonic() - began
    assert slow.status_code == 202, slow.text
    assert SYNC_WAIT_S <= waited < SYNC_WAIT_S + 3 and "Preference-Applied" not in slow.headers
    done = follow(stack, slow.headers["Location"])
    assert done["status"] == "SUCCEEDED" and done["result"]["body"] == {"output": [2.0]}


# --------------------------------------------------------------------------- message-driven invocations


def test_an_invocation_message_replies_once_and_a_poison_one_is_a_dead_letter(stack: LocalStack) -> None:
    import hashlib

    import boto3

    from app import on_invocation
    from chalicelib.core.replies import COMPLETED
    from chalicelib.local.pump import lambda_event
    from chalicelib.local.stack import LOCAL_CREDENTIALS

    sqs = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS).client(
        "sqs", endpoint_url=stack.endpoint_url
    )
    replies = sqs.create_queue(QueueName="modelport-replies-functional")["QueueUrl"]
    body = json.dumps({"model": "iris-onnx", "input": {"records": [FLOWER]}, "reply_to": replies})
    key = {"Authorization": {"DataType": "String", "StringValue": f"Bearer {stack.admin_key}"}}
    queue = stack.outputs["invocations_queue_url"]
    sent = sqs.send_message(QueueUrl=queue, MessageBody=body, MessageAttributes=key)

    def heard(wait_s: float) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            answer = sqs.receive_message(QueueUrl=replies, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in answer.get("Messages", []):
                got.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=replies, ReceiptHandle=message["ReceiptHandle"])
        return got

    (event,) = heard(30)
    assert event["source"] == "modelport" and event["detail-type"] == COMPLETED
    detail = event["detail"]
    assert detail["job_id"] == "job-m" + hashlib.sha256(sent["MessageId"].encode()).hexdigest()[:23]
    assert detail["status"] == "SUCCEEDED"
    assert detail["result"]["body"]["predictions"][0][0]["label"] == "setosa"

    # SQS delivers at least once: the same message (its id) comes again, and nothing more is done
    again = {"MessageId": sent["MessageId"], "ReceiptHandle": "redelivered", "Body": body,
             "Attributes": {"ApproximateReceiveCount": "2"}, "MessageAttributes": key}  # fmt: skip
    on_invocation(lambda_event([again], stack.outputs["invocations_queue_arn"], "us-east-1"), None)
    assert heard(4) == []
    jobs = call(stack, "GET", "/v1/jobs").json()["jobs"]
    assert [j["job_id"] for j in jobs].count(detail["job_id"]) == 1

    # a message without a key is poison: it ends in the DLQ with the reason, and nothing runs
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    dlq = stack.outputs["invocations_dlq_url"]
    deadline, letters = time.monotonic() + 30, []
    while time.monotonic() < deadline and not letters:
        letters = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    (letter,) = letters
    doc = json.loads(letter["Body"])
    assert "Authorization" in doc["reason"] and doc["body"] == body
    assert stack.admin_key not in letter["Body"]
    assert heard(2) == []
