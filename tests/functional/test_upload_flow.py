"""Upload -> S3 -> SQS -> the Chalice SQS handler -> a deployment, all through a moto server.

The client uploads through the presigned POST it was given, S3 notifies the queue, and the messages the
queue really holds are handed to the app's handler as Lambda's event source mapping would.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from chalice.test import Client

from app import app
from chalicelib import wiring, worker
from chalicelib.services.accounts import generate_key
from tests.conftest import Infra

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = generate_key()


def bundle(example: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(ROOT / "examples" / example, arcname=".")
    return buf.getvalue()


@pytest.fixture
def stack(infra: Infra) -> Iterator[tuple[Client, Infra]]:
    settings = replace(infra.settings, admin_key=ADMIN_KEY)
    wiring.override(wiring.aws_container(settings))
    with Client(app) as client:
        yield client, infra
    wiring.override(None)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def upload(client: Client, key: str, name: str, data: bytes) -> dict[str, Any]:
    r = client.http.post(
        f"/v1/models/{name}/versions", headers=auth(key), body=json.dumps({"size_bytes": len(data)})
    )
    assert r.status_code == 201, r.body
    target = r.json_body["upload"]
    sent = requests.post(target["url"], data=target["fields"], files={"file": data}, timeout=30)
    assert sent.status_code in (200, 204), sent.text
    return r.json_body["version"]  # type: ignore[no-any-return]


def queued_bodies(infra: Infra) -> list[str]:
    """Drain the deploy queue like an event source mapping would (S3's test event included)."""
    sqs = infra.client("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=infra.outputs["deploy_queue_url"], MaxNumberOfMessages=10)
        if not got.get("Messages"):
            return bodies
        for message in got["Messages"]:
            bodies.append(message["Body"])
            sqs.delete_message(
                QueueUrl=infra.outputs["deploy_queue_url"], ReceiptHandle=message["ReceiptHandle"]
            )


def deliver(client: Client, body: str) -> None:
    event = client.events.generate_sqs_event(message_bodies=[body], queue_name="modelport-deploy")
    assert worker.handler(event, None) == {"batchItemFailures": []}


def test_an_upload_is_deployed_once_even_when_the_event_comes_three_times(
    stack: tuple[Client, Infra],
) -> None:
    client, infra = stack
    alice = client.http.post("/v1/accounts", headers=auth(ADMIN_KEY), body=json.dumps({"name": "alice"}))
    key = alice.json_body["api_key"]

    version = upload(client, key, "iris-onnx", bundle("iris-onnx"))
    assert version == {**version, "version": 1, "status": "PENDING_UPLOAD"}
    bodies = queued_bodies(infra)
    assert any("ObjectCreated" in b for b in bodies)
    for _ in range(3):  # SQS redelivery and duplicate notifications
        for body in bodies:
            deliver(client, body)

    deployments = client.http.get("/v1/models/iris-onnx/deployments", headers=auth(key)).json_body
    assert len(deployments) == 1
    (dep,) = deployments
    assert dep["state"] == "READY", dep["reason"]
    assert [s["stage"] for s in dep["stages"]] == [
        "RECEIVED", "INSPECTED", "CONFIG_GENERATED", "IMAGE_BUILT", "FUNCTIONS_READY", "READY",
    ]  # fmt: skip
    assert dep["source"].endswith("uploads/iris-onnx/v0000000001/bundle.tar.gz")
    items = infra.client("dynamodb").scan(TableName=infra.settings.deployments_table)["Items"]
    assert len(items) == 1

    config = client.http.get("/v1/models/iris-onnx/versions/1/config", headers=auth(key))
    doc = json.loads(config.body)
    assert doc["container"]["image_uri"] and doc["deployment"]["functions"]
    assert client.http.get("/v1/models/iris-onnx", headers=auth(key)).json_body["default_version"] == 1


def test_two_uploads_at_once_are_two_versions(stack: tuple[Client, Infra]) -> None:
    client, infra = stack
    key = client.http.post(
        "/v1/accounts", headers=auth(ADMIN_KEY), body=json.dumps({"name": "alice"})
    ).json_body["api_key"]
    client.http.post("/v1/models", headers=auth(key), body=json.dumps({"name": "digits-onnx"}))
    data = bundle("digits-onnx")
    versions: list[int] = []

    def one() -> None:
        versions.append(upload(client, key, "digits-onnx", data)["version"])

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == [1, 2]
    for body in queued_bodies(infra):
        deliver(client, body)
    states = {
        v["version"]: v["status"]
        for v in client.http.get("/v1/models/digits-onnx/versions", headers=auth(key)).json_body
    }
    assert states == {1: "READY", 2: "READY"}


def test_a_bad_bundle_fails_with_a_reason_the_user_can_act_on(stack: tuple[Client, Infra]) -> None:
    client, infra = stack
    key = client.http.post(
        "/v1/accounts", headers=auth(ADMIN_KEY), body=json.dumps({"name": "alice"})
    ).json_body["api_key"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    upload(client, key, "evil", buf.getvalue())
    for body in queued_bodies(infra):
        deliver(client, body)
    (dep,) = client.http.get("/v1/models/evil/deployments", headers=auth(key)).json_body
    assert dep["state"] == "FAILED"
    assert "../escape.txt" in dep["reason"]
    assert not (ROOT.parent / "escape.txt").exists()


@pytest.mark.docker
def test_an_upload_builds_a_real_image_and_records_the_association(infra: Infra, engine: Any) -> None:
    """The deployment plan with the docker builder: the version's config file names a real image."""
    settings = replace(infra.settings, admin_key=ADMIN_KEY, image_builder="docker")
    container = wiring.aws_container(settings)
    wiring.override(container)
    try:
        with Client(app) as client:
            key = client.http.post(
                "/v1/accounts", headers=auth(ADMIN_KEY), body=json.dumps({"name": "alice"})
            ).json_body["api_key"]
            upload(client, key, "iris-onnx", bundle("iris-onnx"))
            for body in queued_bodies(infra):
                deliver(client, body)
            (dep,) = client.http.get("/v1/models/iris-onnx/deployments", headers=auth(key)).json_body
            assert dep["state"] == "READY", dep["reason"]
            doc = json.loads(
                client.http.get("/v1/models/iris-onnx/versions/1/config", headers=auth(key)).body
            )
    finally:
        wiring.override(None)
    image = engine.images.get(doc["container"]["image_uri"])
    assert image.labels["dev.modelport.model"] == "iris-onnx"
    association = container.associations.get_model_association("iris-onnx", 1)
    assert association.image_uri == doc["container"]["image_uri"] and association.size_bytes > 0
    assert container.associations.get_environment_image(association.fingerprint) is not None
