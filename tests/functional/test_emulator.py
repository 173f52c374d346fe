"""The Lambda emulator as boto3 sees it through the edge: control API, invoke semantics, failures.

Functions run in process mode (awslambdaric in a process per execution environment); the last test runs
a real image in a container. Each test uses its own function names: the stack is shared by the module.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.local.awslambda.emulator import LambdaEmulator
from chalicelib.local.awslambda.models import LambdaError, iter_log
from chalicelib.local.launchers import ProcessLauncher
from chalicelib.services.intake import config_file_for_dir
from tests.functional.local_stack import (
    BROKEN,
    ECHO,
    EXAMPLES,
    IRIS,
    ROLE,
    Stack,
    create,
    echo_event,
    invoke,
    iris_event,
    make_images,
    start_stack,
)

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, aws_credentials: None) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"), max_concurrency=4, queue_wait_s=30)
    yield running
    running.stop()


@pytest.fixture
def lam(stack: Stack) -> Any:
    return stack.client("lambda", read_timeout=120)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _request(name: str, image: str, **options: Any) -> dict[str, Any]:
    return {
        "FunctionName": name,
        "Role": ROLE,
        "PackageType": "Image",
        "Code": {"ImageUri": image},
        **options,
    }


def test_an_image_function_is_created_invoked_and_reports_like_lambda(stack: Stack, lam: Any) -> None:
    name = _name("iris")
    created = create(lam, name, IRIS, Environment={"Variables": {"MODELPORT_MODEL": "iris-onnx"}})
    assert created["State"] == "Active" and created["PackageType"] == "Image"
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    got = lam.get_function(FunctionName=name)
    assert got["Code"]["ImageUri"] == IRIS
    assert got["Configuration"]["LastUpdateStatus"] == "Successful"
    assert got["Configuration"]["MemorySize"] == 512
    assert got["Configuration"]["Environment"]["Variables"] == {"MODELPORT_MODEL": "iris-onnx"}

    cold, doc = invoke(lam, created["FunctionArn"], iris_event(), LogType="Tail")
    assert cold["StatusCode"] == 200 and "FunctionError" not in cold
    assert cold["ExecutedVersion"] == "$LATEST"
    assert doc["status"] == 200 and doc["timings"]["init_ms"] > 0
    predictions = json.loads(doc["body"])["predictions"]
    assert [row[0]["label"] for row in predictions] == ["setosa", "virginica"]
    lines = list(iter_log(cold["LogResult"]))
    assert lines[-4].startswith("START RequestId: ") and lines[-2].startswith("END RequestId: ")
    invocation = json.loads(lines[-3])  # the runtime's structured line (docs/observability.md)
    assert invocation["message"] == "invocation" and invocation["cold_start"] is True
    assert invocation["model"] == "iris-onnx" and invocation["role"] == "fused"
    assert invocation["status"] == 200
    report = lines[-1]
    assert report.startswith(f"REPORT RequestId: {cold['ResponseMetadata']['RequestId']}\tDuration: ")
    for part in ("Billed Duration: ", "Memory Size: 512 MB", "Max Memory Used: ", "Init Duration: "):
        assert part in report

    warm, doc = invoke(lam, name, iris_event(), LogType="Tail")
    assert doc["status"] == 200 and "init_ms" not in doc["timings"]
    report = list(iter_log(warm["LogResult"]))[-1]
    assert report.startswith("REPORT ") and "Init Duration" not in report
    assert stack.emulator.started(name) == 1


def test_versions_and_aliases_freeze_what_they_point_at(stack: Stack, lam: Any) -> None:
    name = _name("echo")
    create(lam, name, ECHO, MemorySize=256)
    assert lam.publish_version(FunctionName=name, Description="first")["Version"] == "1"
    assert lam.publish_version(FunctionName=name)["Version"] == "1"  # nothing changed: the same version
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert alias["AliasArn"].endswith(f":function:{name}:live")
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert exc.value.response["Error"]["Code"] == "ResourceConflictException"

    lam.update_function_configuration(FunctionName=name, MemorySize=384)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    assert lam.get_function(FunctionName=name, Qualifier="1")["Configuration"]["MemorySize"] == 256
    assert lam.get_function(FunctionName=f"{name}:2")["Configuration"]["FunctionArn"].endswith(f"{name}:2")

    response, doc = invoke(lam, name, echo_event([1.0]), Qualifier="live")
    assert response["ExecutedVersion"] == "1" and json.loads(doc["body"]) == {"output": [1.0]}
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}:live"
    assert invoke(lam, arn, echo_event([2.0]))[0]["ExecutedVersion"] == "2"
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2"]

    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=name, Qualifier="2")
    assert exc.value.response["Error"]["Code"] == "ResourceConflictException"  # the alias uses it
    lam.delete_alias(FunctionName=name, Name="live")
    with pytest.raises(ClientError) as exc:
        lam.get_alias(FunctionName=name, Name="live")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    lam.delete_function(FunctionName=name)
    with pytest.raises(ClientError) as exc:
        invoke(lam, name, echo_event([1.0]))
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_requests_lambda_refuses_get_lambdas_errors(stack: Stack, lam: Any) -> None:
    name = _name("echo")
    create(lam, name, ECHO)
    cases: list[tuple[dict[str, Any], str, int]] = [
        (_request(name, ECHO), "ResourceConflictException", 409),
        (_request(_name("x"), "no/such:v1"), "InvalidParameterValueException", 400),
        (_request(_name("x"), ECHO, Environment={"Variables": {"AWS_REGION": "eu-west-1"}}),
         "InvalidParameterValueException", 400),
        (_request(_name("x"), ECHO, Timeout=901), "InvalidParameterValueException", 400),
        ({"FunctionName": _name("zip"), "Role": ROLE, "Code": {"ZipFile": b"PK"}, "Runtime": "python3.11",
          "Handler": "x.y"}, "InvalidParameterValueException", 400),
    ]  # fmt: skip
    for request, code, status in cases:
        with pytest.raises(ClientError) as exc:
            lam.create_function(**request)
        assert (
            exc.value.response["Error"]["Code"],
            exc.value.response["ResponseMetadata"]["HTTPStatusCode"],
        ) == (
            code,
            status,
        ), request
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=name, Payload=b"{not json")
    assert exc.value.response["Error"]["Code"] == "InvalidRequestContentException"
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=name, Qualifier="7", Payload=b"{}")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert lam.invoke(FunctionName=name, InvocationType="DryRun")["StatusCode"] == 204


def test_environments_scale_out_to_the_concurrency_then_are_reused_warm(stack: Stack, lam: Any) -> None:
    name = _name("echo")
    create(lam, name, ECHO)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: invoke(lam, name, echo_event([i], 1.0))[1], range(4)))
    assert [json.loads(a["body"]) for a in answers] == [{"output": [i]} for i in range(4)]
    assert stack.emulator.started(name) == 4  # each held its environment: four cold starts

    for i in range(8):
        assert json.loads(invoke(lam, name, echo_event([i]))[1]["body"]) == {"output": [i]}
    assert stack.emulator.started(name) == 4  # warm reuse

    with ThreadPoolExecutor(8) as pool:  # more callers than environments: they wait their turn
        answers = list(pool.map(lambda i: invoke(lam, name, echo_event([i], 0.3))[1], range(8)))
    assert all(a["status"] == 200 for a in answers)
    assert stack.emulator.started(name) == 4
    environments = stack.emulator.environments(name)
    assert len(environments) == 4 and sum(e.invocations for e in environments) == 4 + 8 + 8


def test_provisioned_concurrency_initializes_environments_before_any_call(stack: Stack, lam: Any) -> None:
    name = _name("echo")
    create(lam, name, ECHO)
    version = lam.publish_version(FunctionName=name)["Version"]
    for qualifier, code in (("$LATEST", "InvalidParameterValueException"), (version, None)):
        with pytest.raises(ClientError) as exc:
            lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        assert exc.value.response["Error"]["Code"] in (
            code or "ProvisionedConcurrencyConfigNotFoundException",
            "ProvisionedConcurrencyConfigNotFoundException",
        )
    with pytest.raises(ClientError) as exc:
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=2
        )
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as exc:  # over the emulator's environments per version
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=5
        )
    assert "over what this emulator runs" in exc.value.response["Error"]["Message"]

    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=3
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 3
    deadline = time.monotonic() + 60
    while (got := lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version))[
        "Status"
    ] != "READY":
        assert got["Status"] == "IN_PROGRESS" and time.monotonic() < deadline
        time.sleep(0.1)
    assert got["AvailableProvisionedConcurrentExecutions"] == 3
    assert stack.emulator.started(name) == 3 and len(stack.emulator.environments(name)) == 3

    with ThreadPoolExecutor(3) as pool:  # a burst of three lands on initialized environments
        calls = list(
            pool.map(
                lambda i: invoke(lam, name, echo_event([i], 0.3), Qualifier=version, LogType="Tail"), range(3)
            )
        )
    reports = [list(iter_log(response["LogResult"]))[-1] for response, _ in calls]
    assert all(r.startswith("REPORT ") and "Init Duration" not in r for r in reports)
    assert stack.emulator.started(name) == 3

    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    with pytest.raises(ClientError) as exc:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    assert exc.value.response["Error"]["Code"] == "ProvisionedConcurrencyConfigNotFoundException"


def test_an_event_invocation_is_accepted_and_runs_in_the_background(stack: Stack, lam: Any) -> None:
    name = _name("echo")
    create(lam, name, ECHO)
    response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(echo_event([1.0])))
    assert response["StatusCode"] == 202
    deadline = time.monotonic() + 30
    while not any(e.invocations and not e.busy for e in stack.emulator.environments(name)):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_timeout_kills_the_environment_and_the_next_call_gets_a_fresh_one(stack: Stack, lam: Any) -> None:
    name = _name("echo")
    create(lam, name, ECHO, Timeout=1)
    assert invoke(lam, name, echo_event([1.0]))[1]["status"] == 200  # warm it up: init is not counted
    pids = {e.pid for e in stack.emulator.environments(name)}
    started = time.monotonic()
    response, error = invoke(lam, name, echo_event([1.0], 5.0), LogType="Tail")
    assert time.monotonic() - started < 3
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"] == (
        f"RequestId: {response['ResponseMetadata']['RequestId']} Error: Task timed out after 1.00 seconds"
    )
    lines = list(iter_log(response["LogResult"]))
    assert lines[-3].endswith("Task timed out after 1.00 seconds") and lines[-1].endswith("Status: timeout")
    assert not any(e.pid in pids for e in stack.emulator.environments(name))
    assert json.loads(invoke(lam, name, echo_event([2.0]))[1]["body"]) == {"output": [2.0]}
    assert stack.emulator.started(name) == 2


def test_a_runtime_killed_mid_invocation_is_a_runtime_exit_error(stack: Stack, lam: Any) -> None:
    name = _name("echo")
    create(lam, name, ECHO)
    assert invoke(lam, name, echo_event([1.0]))[1]["status"] == 200
    (environment,) = stack.emulator.environments(name)
    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.append(invoke(lam, name, echo_event([1.0], 30.0))))
    caller.start()
    deadline = time.monotonic() + 10
    while not stack.emulator.environments(name)[0].busy:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)  # inside the handler's sleep
    assert environment.pid is not None
    os.kill(environment.pid, signal.SIGKILL)
    caller.join(5)
    assert not caller.is_alive(), "the caller must not wait out the timeout"
    response, error = results[0]
    assert response["FunctionError"] == "Unhandled"
    assert error == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {response['ResponseMetadata']['RequestId']} "
        "Error: Runtime exited with error: signal: killed",
    }
    assert json.loads(invoke(lam, name, echo_event([3.0]))[1]["body"]) == {"output": [3.0]}
    assert stack.emulator.started(name) == 2


def test_an_init_failure_is_reported_as_lambda_reports_it(stack: Stack, lam: Any) -> None:
    name = _name("broken")
    create(lam, name, BROKEN)
    for _ in range(2):  # every invocation tries a fresh init, as Lambda does
        response, error = invoke(lam, name, iris_event(), LogType="Tail")
        assert response["FunctionError"] == "Unhandled"
        assert error["errorType"] == "ModelLoadError"
        assert "model.onnx: the onnx model could not be loaded" in error["errorMessage"]
        lines = list(iter_log(response["LogResult"]))
        assert any(
            line.startswith("INIT_REPORT Init Duration: ") and "Status: error" in line for line in lines
        )
        assert lines[-1].endswith("Status: error\tError Type: ModelLoadError")
    assert stack.emulator.started(name) == 2
    assert stack.emulator.environments(name) == []


# --------------------------------------------------------------------------- the emulator by itself


@pytest.fixture
def images(tmp_path: Path) -> Any:
    return make_images(tmp_path)


def _echo(emulator: LambdaEmulator, name: str, timeout: int = 10) -> None:
    emulator.create_function(
        {
            "FunctionName": name,
            "Role": ROLE,
            "PackageType": "Image",
            "Code": {"ImageUri": ECHO},
            "Timeout": timeout,
        }
    )


def _payload(values: list[float], sleep_s: float = 0.0) -> bytes:
    return json.dumps(echo_event(values, sleep_s)).encode()


def test_callers_beyond_the_concurrency_wait_then_are_throttled(images: Any) -> None:
    with LambdaEmulator(ProcessLauncher(images), max_concurrency=1, queue_wait_s=0.3) as emulator:
        _echo(emulator, "one")
        emulator.invoke("one", _payload([0.0]))
        busy = threading.Thread(target=emulator.invoke, args=("one", _payload([0.0], 2.0)))
        busy.start()
        time.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(LambdaError) as exc:
            emulator.invoke("one", _payload([1.0]))
        assert (exc.value.code, exc.value.status) == ("TooManyRequestsException", 429)
        assert 0.25 < time.monotonic() - started < 2
        busy.join()


def test_idle_environments_are_reaped_and_shutdown_fails_running_calls_at_once(images: Any) -> None:
    emulator = LambdaEmulator(ProcessLauncher(images), idle_s=0.3)
    _echo(emulator, "idle")
    emulator.invoke("idle", _payload([0.0]))
    deadline = time.monotonic() + 10
    while emulator.environments("idle"):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.append(emulator.invoke("idle", _payload([0.0], 30.0))))
    caller.start()
    while not [e for e in emulator.environments("idle") if e.busy]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    started = time.monotonic()
    emulator.shutdown()
    caller.join(10)
    assert not caller.is_alive() and time.monotonic() - started < 10
    assert results[0].function_error == "Unhandled"
    assert json.loads(results[0].payload)["errorType"] == "Runtime.ExitError"


def test_an_update_retires_the_old_environments(images: Any) -> None:
    with LambdaEmulator(ProcessLauncher(images)) as emulator:
        _echo(emulator, "upd")
        emulator.invoke("upd", _payload([0.0]))
        (old,) = emulator.environments("upd")
        emulator.update_function_configuration("upd", {"Environment": {"Variables": {"X": "1"}}})
        emulator.invoke("upd", _payload([0.0]))
        (new,) = emulator.environments("upd")
        assert new.id != old.id and emulator.started("upd") == 2


# --------------------------------------------------------------------------- a real image in a container


def _iris_image(engine: Any) -> str:
    """The iris-onnx image from the image builder (built here if the builder is there)."""
    try:
        from chalicelib.docker.builder import DockerImageBuilder
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the image builder must be there in CI: {exc}")
        pytest.skip(f"the image builder is not ready: {exc}")
    src = EXAMPLES / "iris-onnx"
    report = DockerImageBuilder(engine).build_image(config_file_for_dir(src), src, lambda line: None)
    return report.association.image_uri


@pytest.mark.docker
def test_a_container_environment_runs_the_image_as_lambda_does(engine: Any) -> None:
    from chalicelib.local.launchers import ContainerLauncher

    image = _iris_image(engine)
    digest = (engine.images.get(image).attrs.get("RepoDigests") or [engine.images.get(image).id])[0]
    with LambdaEmulator(ContainerLauncher(engine)) as emulator:
        created = emulator.create_function(_request("iris-container", image, MemorySize=512, Timeout=30))
        assert digest.endswith(created["CodeSha256"])
        event = json.dumps(iris_event()).encode()
        cold = emulator.invoke("iris-container", event, log_type="Tail")
        assert cold.function_error is None, cold.payload
        doc = json.loads(cold.payload)
        assert doc["status"] == 200 and json.loads(doc["body"])["predictions"][0][0]["label"] == "setosa"
        report = list(iter_log(cold.log_result))[-1]
        assert "Init Duration" in report and "Memory Size: 512 MB" in report

        (container,) = engine.containers.list(filters={"label": "modelport.function=iris-container"})
        host = container.attrs["HostConfig"]
        assert host["NetworkMode"] == "host" and host["ReadonlyRootfs"] is True
        assert host["Memory"] == 512 * 1024 * 1024 and "/tmp" in host["Tmpfs"]
        assert container.attrs["Config"]["User"] == "1000:1000"

        warm = emulator.invoke("iris-container", event, log_type="Tail")
        assert json.loads(warm.payload)["body"] == doc["body"]
        assert "Init Duration" not in list(iter_log(warm.log_result))[-1]

        container.kill()  # an environment killed while idle: the next call gets a fresh one
        again = emulator.invoke("iris-container", event)
        assert again.function_error is None and json.loads(again.payload)["status"] == 200
        assert emulator.started("iris-container") == 2
    deadline = time.monotonic() + 30
    while engine.containers.list(all=True, filters={"label": "modelport.function=iris-container"}):
        assert time.monotonic() < deadline, "shutdown must remove the containers"
        time.sleep(0.2)
