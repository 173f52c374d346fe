"""The edge endpoint: moto behind it, Step Functions running our functions, and the function manager.

moto's state machine interpreter calls Lambda at ``http://localhost:$MOTO_PORT``, which ``start_moto``
points at the edge, so a chained pipeline's Task states run real runtimes in the emulator.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.aws.functions import LambdaFunctionManager
from chalicelib.aws.invoke import LambdaInvoker
from chalicelib.core.config_file import (
    ContainerAssociation,
    DeployedFunction,
    DeployedFunctions,
    ModelConfigFile,
)
from chalicelib.core.errors import FunctionTimedOut
from chalicelib.core.pipeline import state_machine_definition
from chalicelib.local.edge.server import EdgeServer
from chalicelib.services.intake import config_file_for_dir
from tests.functional.local_stack import (
    ECHO,
    EXAMPLES,
    IRIS,
    ROLE,
    Stack,
    create,
    echo_event,
    iris_event,
    start_stack,
)

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, aws_credentials: None) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def iris_manifest() -> ModelConfigFile:
    return config_file_for_dir(EXAMPLES / "iris-onnx")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _with_image(manifest: ModelConfigFile, image_uri: str, version: int = 1) -> ModelConfigFile:
    container = ContainerAssociation(
        environment_image="modelport/env:test",
        image_uri=image_uri,
        image_digest="sha256:" + "0" * 64,
        size_bytes=1,
    )
    return manifest.model_copy(update={"container": container, "version": version})


# --------------------------------------------------------------------------- moto behind the edge


def test_other_services_reach_moto_unchanged(stack: Stack) -> None:
    s3 = stack.client("s3")
    bucket = _name("edge")
    s3.create_bucket(Bucket=bucket)
    data = bytes(range(256)) * 12_000  # 3 MB of every byte value, streamed both ways
    s3.put_object(Bucket=bucket, Key="a/b.bin", Body=data)
    assert s3.get_object(Bucket=bucket, Key="a/b.bin")["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="a/b.bin")["ContentLength"] == len(data)
    sqs = stack.client("sqs")
    queue = sqs.create_queue(QueueName=_name("q"))["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="hello")
    assert sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"] == "hello"
    dynamodb = stack.client("dynamodb")
    table = _name("t")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(ClientError) as exc:  # moto's own error shapes come through
        dynamodb.get_item(TableName=_name("missing"), Key={"pk": {"S": "x"}})
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"


def _machine(stack: Stack, definition: dict[str, Any]) -> str:
    sfn = stack.client("stepfunctions")
    return str(
        sfn.create_state_machine(
            name=_name("pipeline"), definition=json.dumps(definition), roleArn=ROLE, type="EXPRESS"
        )["stateMachineArn"]
    )


def test_moto_runs_a_chained_pipeline_through_our_functions(
    stack: Stack, iris_manifest: ModelConfigFile
) -> None:
    lam = stack.client("lambda")
    arn = create(lam, _name("echo"), ECHO)["FunctionArn"]
    # iris has pre and post steps: three Task states, each running the echo function
    definition = state_machine_definition(iris_manifest, {"pre": arn, "model": arn, "post": arn})
    machine = _machine(stack, definition)
    sfn = stack.client("stepfunctions", inject_host_prefix=False)
    event = json.dumps(echo_event([1.5, 2.5]))

    runs = [sfn.start_execution(stateMachineArn=machine, input=event)["executionArn"] for _ in range(2)]
    for run in runs:  # unnamed executions get names, as on AWS (moto would call both "None")
        deadline = time.monotonic() + 60
        while (described := sfn.describe_execution(executionArn=run))["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert described["status"] == "SUCCEEDED", described
        assert json.loads(json.loads(described["output"])["body"]) == {"output": [1.5, 2.5]}

    synced = sfn.start_sync_execution(stateMachineArn=machine, input=event)
    assert synced["status"] == "SUCCEEDED"
    output = json.loads(synced["output"])
    assert output["status"] == 200 and json.loads(output["body"]) == {"output": [1.5, 2.5]}
    assert synced["billingDetails"]["billedDurationInMilliseconds"] >= 100
    assert synced["stopDate"] >= synced["startDate"]
    assert stack.emulator.started(arn) <= 2  # two concurrent executions at most; then warm reuse

    # the control plane's invoker, chained mode: StartSyncExecution through the edge
    invoker = LambdaInvoker(lam, sfn)
    chained = DeployedFunctions(mode="chained", functions=(), state_machine_arn=machine)
    answer = invoker.invoke(chained, echo_event([7.0]))
    assert json.loads(str(answer["body"])) == {"output": [7.0]}


def test_a_failing_stage_fails_the_execution(stack: Stack, iris_manifest: ModelConfigFile) -> None:
    lam = stack.client("lambda")
    arn = create(lam, _name("slow"), ECHO, Timeout=1)["FunctionArn"]
    machine = _machine(
        stack, state_machine_definition(iris_manifest, {"pre": arn, "model": arn, "post": arn})
    )
    sfn = stack.client("stepfunctions", inject_host_prefix=False)
    synced = sfn.start_sync_execution(stateMachineArn=machine, input=json.dumps(echo_event([1.0], 3.0)))
    assert synced["status"] == "FAILED" and synced["error"] == "ModelportStageFailed"

    # a function's timeout, invoked directly, is the invoker's FunctionTimedOut (the API's 504)
    fused = DeployedFunctions(
        mode="fused", functions=(DeployedFunction(role="fused", function_name="x", function_arn=arn),)
    )
    with pytest.raises(FunctionTimedOut):
        LambdaInvoker(lam, sfn).invoke(fused, echo_event([1.0], 3.0))


def test_the_edge_answers_quickly_when_moto_is_gone_or_broken(stack: Stack) -> None:
    def check(upstream: str, status: int, within: float, **options: Any) -> None:
        with EdgeServer(0, upstream, stack.emulator, **options) as edge:
            sqs = stack.session.client(
                "sqs", endpoint_url=edge.url, config=Config(retries={"max_attempts": 0}, read_timeout=30)
            )
            started = time.monotonic()
            with pytest.raises(ClientError) as exc:
                sqs.list_queues()
            assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
            assert time.monotonic() - started < within
            # the Lambda API does not need moto
            assert (
                stack.session.client("lambda", endpoint_url=edge.url).list_functions()["Functions"]
                is not None
            )

    with socket.socket() as unused:  # nothing listens: refused at once
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    check(f"http://127.0.0.1:{port}", 502, 2)

    for behaviour, status in (("hang up", 502), ("never answer", 504)):
        listener = socket.create_server(("127.0.0.1", 0))
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=_fake_moto, args=(listener, behaviour, accepted), daemon=True)
        thread.start()
        check(f"http://127.0.0.1:{listener.getsockname()[1]}", status, 3, upstream_timeout_s=1.0)
        thread.join(5)
        for conn in accepted:
            conn.close()


def _fake_moto(listener: socket.socket, behaviour: str, accepted: list[socket.socket]) -> None:
    """Takes one request, then hangs up (moto stopped under the request) or never answers."""
    with listener:
        conn, _ = listener.accept()
        conn.recv(65536)
        if behaviour == "hang up":
            conn.close()
        else:
            accepted.append(conn)


# --------------------------------------------------------------------------- the function manager


def test_the_function_manager_deploys_publishes_and_promotes_through_the_edge(
    stack: Stack, iris_manifest: ModelConfigFile
) -> None:
    lam = stack.client("lambda")
    stack.images.register("modelport/iris-onnx:v2", stack.images.resolve(IRIS))
    stack.emulator.settle_s = 0.3  # Pending after create, InProgress after each update: the manager waits
    lines: list[str] = []
    try:
        manager = LambdaFunctionManager(lam, ROLE, wait_s=30)
        first = manager.deploy(_with_image(iris_manifest, IRIS), lines.append)
        second = manager.deploy(_with_image(iris_manifest, "modelport/iris-onnx:v2", 2), lines.append)
    finally:
        stack.emulator.settle_s = 0.0
    (fn1,), (fn2,) = first.functions, second.functions
    assert (fn1.function_name, fn1.version, fn2.version) == ("modelport-iris-onnx", "1", "2")
    assert fn1.function_arn == "arn:aws:lambda:us-east-1:123456789012:function:modelport-iris-onnx"
    assert any(line.startswith("waiting for modelport-iris-onnx") for line in lines), lines
    config = lam.get_function(FunctionName="modelport-iris-onnx", Qualifier="2")["Configuration"]
    assert config["Environment"]["Variables"] == {"MODELPORT_MODEL": "iris-onnx", "MODELPORT_VERSION": "2"}
    assert (config["MemorySize"], config["Timeout"]) == (512, 10)

    manager.promote(first)
    assert lam.get_alias(FunctionName="modelport-iris-onnx", Name="live")["FunctionVersion"] == "1"
    manager.promote(second)
    assert lam.get_alias(FunctionName="modelport-iris-onnx", Name="live")["FunctionVersion"] == "2"

    answer = LambdaInvoker(lam, stack.client("stepfunctions", inject_host_prefix=False)).invoke(
        second, iris_event()
    )
    assert answer["status"] == 200 and "predictions" in json.loads(str(answer["body"]))
    assert manager.deploy(_with_image(iris_manifest, "modelport/iris-onnx:v2", 2), lines.append) == second


def test_the_function_manager_provisions_the_new_version_before_it_goes_live(
    stack: Stack, iris_manifest: ModelConfigFile
) -> None:
    lam = stack.client("lambda")
    manifest = _with_image(iris_manifest, IRIS).model_copy(update={"name": _name("warm")})
    manifest = manifest.model_copy(
        update={"environment": manifest.environment.model_copy(update={"provisioned_concurrency": 2})}
    )
    lines: list[str] = []
    deployed = LambdaFunctionManager(lam, ROLE, wait_s=60).deploy(manifest, lines.append)
    (fn,) = deployed.functions
    assert any("initializing 2 environment(s)" in line for line in lines), lines
    got = lam.get_provisioned_concurrency_config(FunctionName=fn.function_name, Qualifier=fn.version)
    assert (got["Status"], got["AvailableProvisionedConcurrentExecutions"]) == ("READY", 2)
    assert stack.emulator.started(fn.function_name) == 2  # before any invocation
    answer = LambdaInvoker(lam, None).invoke(deployed, iris_event())
    assert answer["status"] == 200 and stack.emulator.started(fn.function_name) == 2


def test_the_function_manager_makes_the_same_calls_against_moto(
    stack: Stack, iris_manifest: ModelConfigFile
) -> None:
    """Control calls only: moto's Lambda keeps the records but never runs an image."""
    iam = stack.session.client("iam", endpoint_url=stack.moto.url)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName=_name("fn-role"), AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]
    lam = stack.session.client("lambda", endpoint_url=stack.moto.url)
    manager = LambdaFunctionManager(lam, role, sleep=lambda s: None)
    manifest = iris_manifest.model_copy(update={"name": _name("moto")})
    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelport/iris:"
    first = manager.deploy(_with_image(manifest, ecr + "v1"), lambda line: None)
    second = manager.deploy(_with_image(manifest, ecr + "v2", 2), lambda line: None)
    assert (first.functions[0].version, second.functions[0].version) == ("1", "2")
    manager.promote(first)
    manager.promote(second)
    name = first.functions[0].function_name
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "2"
    assert lam.get_function(FunctionName=name)["Code"]["ImageUri"] == ecr + "v2"
