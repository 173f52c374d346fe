"""The deploy worker as the local stack runs it on an engine: a container-image function in the emulator.

Its image is built daemonlessly into a local registry (on a free port), the function created through the
Lambda API at the edge, and the pump invokes it with the deploy queue's SQS events. Its container must have
no docker socket: whatever it builds it builds with Python and the Registry HTTP API alone.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.client import Client, Connection, deploy
from chalicelib.docker.wheel_cache import ArtifactWheelCache
from chalicelib.local.stack import LOCAL_CREDENTIALS, LocalStack
from chalicelib.local.wheels import resolve_for_dirs

pytestmark = [pytest.mark.functional, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stack(engine: Any) -> Iterator[LocalStack]:
    running = LocalStack(
        edge_port=0, api_port=0, launcher="container", worker="function", registry_port=free_port()
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def lambda_client(stack: LocalStack) -> Any:
    session = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS)
    return session.client("lambda", endpoint_url=stack.endpoint_url)


def test_the_worker_is_an_image_function_whose_container_has_no_docker_socket(
    stack: LocalStack, lambda_client: Any, engine: Any
) -> None:
    name = stack.container.settings.worker_function
    config = lambda_client.get_function(FunctionName=name)["Configuration"]
    assert config["PackageType"] == "Image"
    variables = config["Environment"]["Variables"]
    assert variables["MODELPORT_IMAGE_BUILDER"] == "oci" and variables["MODELPORT_REGISTRY"] == stack.registry
    assert variables["MODELPORT_FUNCTIONS"] == "lambda" and variables["MODELPORT_SANDBOX"] == "lambda"
    assert "MODELPORT_ADMIN_KEY" not in variables

    answer = lambda_client.invoke(FunctionName=name, Payload=json.dumps({"Records": []}).encode())
    assert "FunctionError" not in answer, answer["Payload"].read()
    assert json.loads(answer["Payload"].read()) == {"batchItemFailures": []}

    ours = [
        c
        for c in engine.containers.list(filters={"label": f"modelport.function={name}"})
        if c.attrs["Config"]["Image"].startswith(f"{stack.registry}/")
    ]
    assert ours  # the warm execution environment that just answered
    for container in ours:
        attrs = container.attrs
        mounts = [m.get("Source", "") + " " + m.get("Destination", "") for m in attrs["Mounts"]]
        assert not [m for m in mounts if "docker" in m], mounts
        assert not attrs["HostConfig"].get("Binds")
        assert not [e for e in attrs["Config"]["Env"] if e.startswith("DOCKER_")]
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True
        probe = container.exec_run(
            ["python", "-c", "import os; print(os.path.exists('/var/run/docker.sock'))"]
        )
        assert probe.output.strip() == b"False", probe.output


def test_a_deployment_through_the_api_is_built_inside_the_worker_and_pushed_to_the_registry(
    stack: LocalStack,
) -> None:
    # The host's share (what `modelport demo` does): the worker's container reaches no package index here.
    assert stack.registry is not None and stack.wheel_cache is not None
    cache = ArtifactWheelCache(stack.container.artifacts, stack.container.settings.wheel_cache_prefix)
    assert resolve_for_dirs(
        [EXAMPLES / "iris-onnx"], registry=stack.registry, cache=cache, progress=print
    ) == {EXAMPLES / "iris-onnx": None}
    admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
    outcome = deploy(admin, EXAMPLES / "iris-onnx")
    assert outcome.status == "READY", outcome.reason
    assert outcome.config is not None
    images = json.dumps(outcome.config)
    assert stack.registry is not None and stack.registry in images
