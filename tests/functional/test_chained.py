"""Chained pipelines through the local stack: pre/model/post functions on the Lambda emulator (process
mode), the state machine on moto behind the edge, ``StartSyncExecution``: the same answers as fused."""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.aws.functions import LambdaFunctionManager
from chalicelib.aws.invoke import LambdaInvoker
from chalicelib.core.config_file import ContainerAssociation, ModelConfigFile
from chalicelib.core.errors import FunctionFailed
from chalicelib.core.pipeline import STATE_NAMES, Role, stages_of, state_machine_definition, with_plan
from chalicelib.local.launchers import ProcessImage
from chalicelib.local.runtime_api import REPO_ROOT
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
    start_stack,
)

pytestmark = pytest.mark.functional

DIABETES = "modelport/diabetes-lightgbm:v1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, aws_credentials: None) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    src = EXAMPLES / "diabetes-lightgbm"
    running.images.write(DIABETES, src, config_file_for_dir(src))
    yield running
    running.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _csv_event(path: Path, accept: str) -> dict[str, Any]:
    return {"body": path.read_text(), "content_type": "text/csv", "accept": accept}


def test_a_state_machine_of_stage_functions_answers_like_the_fused_function(stack: Stack) -> None:
    """diabetes-lightgbm: CSV -> tabular (pre) -> LightGBM (model) -> regression + scatter (post); the
    scatter plots against a request feature, so the request's table crosses two hops."""
    manifest: ModelConfigFile = config_file_for_dir(EXAMPLES / "diabetes-lightgbm")
    lam = stack.client("lambda")
    fused = _name("fused")
    create(lam, fused, DIABETES)
    arns: dict[Role, str] = {}
    for role in stages_of(manifest):
        arns[role] = create(lam, _name(role), DIABETES, Environment={"Variables": {"MODELPORT_ROLE": role}})[
            "FunctionArn"
        ]
    sfn = stack.client("stepfunctions", inject_host_prefix=False)
    machine = sfn.create_state_machine(
        name=_name("chain"),
        definition=json.dumps(state_machine_definition(manifest, arns)),
        roleArn=ROLE,
        type="EXPRESS",
    )["stateMachineArn"]

    patients = EXAMPLES / "diabetes-lightgbm" / "samples" / "patients.csv"
    events = [
        _csv_event(patients, "application/json"),
        _csv_event(patients, "image/png"),
        {"body": '{"records": [{"age": 50}]}', "content_type": "application/json"},  # a 400 from pre
    ]
    for event in events:
        _, want = invoke(lam, fused, event)
        synced = sfn.start_sync_execution(stateMachineArn=machine, input=json.dumps(event))
        assert synced["status"] == "SUCCEEDED", synced
        got = json.loads(synced["output"])
        assert {k: got[k] for k in ("status", "content_type", "body_encoding", "body")} == {
            k: want[k] for k in ("status", "content_type", "body_encoding", "body")
        }
        assert list(got["timings"]) == list(want["timings"])
    assert want["status"] == 400 and "missing feature" in want["body"]
    for arn in arns.values():
        assert stack.emulator.started(arn) == 1  # warm reuse across executions


# --------------------------------------------------------------------------- the function manager, chained


def _chained_manifest(name: str, version: int, image: str = DIABETES) -> ModelConfigFile:
    manifest: ModelConfigFile = config_file_for_dir(EXAMPLES / "diabetes-lightgbm")
    container = ContainerAssociation(
        environment_image="modelport/env:test",
        image_uri=image,
        image_digest="sha256:" + "0" * 64,
        size_bytes=1,
    )
    update = {"name": name, "version": version, "pipeline": "chained", "container": container}
    return with_plan(manifest.model_copy(update=update), shared_stages=False)


def test_the_function_manager_deploys_a_chained_pipeline_through_the_edge(stack: Stack) -> None:
    lam = stack.client("lambda")
    sfn = stack.client("stepfunctions", inject_host_prefix=False)
    name = _name("chain")
    lines: list[str] = []
    stack.images.register("modelport/diabetes-lightgbm:v2", stack.images.resolve(DIABETES))
    manager = LambdaFunctionManager(lam, ROLE, sfn_client=sfn, wait_s=30)
    first = manager.deploy(_chained_manifest(name, 1), lines.append)
    assert first.mode == "chained"
    assert [(f.role, f.function_name, f.version) for f in first.functions] == [
        (role, f"modelport-{name}-{role}", "1") for role in ("pre", "model", "post")
    ]
    assert (
        first.state_machine_arn == f"arn:aws:states:us-east-1:123456789012:stateMachine:modelport-{name}-v1"
    )
    described = sfn.describe_state_machine(stateMachineArn=first.state_machine_arn)
    states = json.loads(described["definition"])["States"]
    tasks = [states[STATE_NAMES[f.role]] for f in first.functions if f.role != "fused"]
    assert [t["Parameters"]["FunctionName"] for t in tasks] == [
        f"{f.function_arn}:1" for f in first.functions
    ]  # the published versions, never $LATEST
    for function in first.functions:
        config = lam.get_function(FunctionName=function.function_name, Qualifier="1")["Configuration"]
        assert config["Environment"]["Variables"]["MODELPORT_ROLE"] == function.role

    # the control plane's invoker runs it; the answer is the fused function's
    fused = _name("fused")
    create(lam, fused, DIABETES)
    event = _csv_event(EXAMPLES / "diabetes-lightgbm" / "samples" / "patients.csv", "application/json")
    answer = LambdaInvoker(lam, sfn).invoke(first, event)
    _, want = invoke(lam, fused, event)
    assert (answer["status"], answer["body"]) == (200, want["body"])

    # the same version again changes nothing; a new version gets its own machine, the first keeps its own
    assert manager.deploy(_chained_manifest(name, 1), lines.append) == first
    second = manager.deploy(_chained_manifest(name, 2, "modelport/diabetes-lightgbm:v2"), lines.append)
    assert [f.version for f in second.functions] == ["2", "2", "2"]
    assert second.state_machine_arn and second.state_machine_arn.endswith(f"modelport-{name}-v2")
    assert LambdaInvoker(lam, sfn).invoke(first, event)["body"] == want["body"]
    assert LambdaInvoker(lam, sfn).invoke(second, event)["body"] == want["body"]
    assert sum("creating state machine" in line for line in lines) == 2, lines

    manager.promote(first)
    manager.promote(second)
    for function in second.functions:
        assert lam.get_alias(FunctionName=function.function_name, Name="live")["FunctionVersion"] == "2"


def test_the_chained_deploy_makes_the_same_calls_against_moto(stack: Stack) -> None:
    """Control calls only (moto's Lambda never runs an image); a machine changed behind our back is
    brought back to the version's definition on a redeploy."""
    iam = stack.session.client("iam", endpoint_url=stack.moto.url)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]}}]}  # fmt: skip
    role = iam.create_role(RoleName=_name("role"), AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    lam = stack.session.client("lambda", endpoint_url=stack.moto.url)
    sfn = stack.session.client("stepfunctions", endpoint_url=stack.moto.url)
    manager = LambdaFunctionManager(lam, role, sfn_client=sfn, states_role_arn=role, sleep=lambda s: None)
    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelport/diabetes:v1"
    name = _name("moto")
    first = manager.deploy(_chained_manifest(name, 1, ecr), lambda line: None)
    assert first.mode == "chained" and first.state_machine_arn
    sfn.update_state_machine(stateMachineArn=first.state_machine_arn, definition=json.dumps(
        {"StartAt": "X", "States": {"X": {"Type": "Succeed"}}}))  # fmt: skip
    lines: list[str] = []
    assert manager.deploy(_chained_manifest(name, 1, ecr), lines.append) == first
    assert any(line.startswith("updating state machine") for line in lines), lines
    described = sfn.describe_state_machine(stateMachineArn=first.state_machine_arn)
    assert "Predict" in json.loads(described["definition"])["States"]
    assert described["roleArn"] == role


def test_a_chain_of_one_and_a_stage_that_cannot_load(stack: Stack) -> None:
    """A model without steps chains to one Task; a stage whose model cannot load fails the execution,
    which the invoker reports as FunctionFailed (the API's 502), not as an answer."""
    lam = stack.client("lambda")
    sfn = stack.client("stepfunctions", inject_host_prefix=False)
    manager = LambdaFunctionManager(lam, ROLE, sfn_client=sfn, wait_s=30)
    invoker = LambdaInvoker(lam, sfn)

    echo = ModelConfigFile.model_validate_json(
        (stack.images.resolve(ECHO).model_dir / "model-config.json").read_bytes()
    )
    container = ContainerAssociation(
        environment_image="env", image_uri=ECHO, image_digest="sha256:" + "0" * 64, size_bytes=1
    )
    name = _name("echo")
    one = manager.deploy(
        with_plan(
            echo.model_copy(update={"name": name, "pipeline": "chained", "container": container}),
            shared_stages=False,
        ),
        lambda line: None,
    )
    assert [f.role for f in one.functions] == ["model"]
    assert invoker.invoke(one, echo_event([1.0, 2.0]))["body"] == '{"output":[1.0,2.0]}'
    assert invoker.invoke(one, {"body": "{}"})["status"] == 400  # the model stage's own answer

    broken = _chained_manifest(_name("broken"), 1, BROKEN)
    broken = with_plan(
        broken.model_copy(update={"processing": config_file_for_dir(EXAMPLES / "iris-onnx").processing}),
        shared_stages=False,
    )
    deployment = manager.deploy(broken, lambda line: None)
    event: dict[str, object] = {
        "body": '{"rows": [[5.1, 3.5, 1.4, 0.2]]}',
        "content_type": "application/json",
    }
    with pytest.raises(FunctionFailed, match="pipeline failed: ModelportStageFailed"):
        invoker.invoke(deployment, event)


# --------------------------------------------------------------------------- shared stage functions


def test_shared_stage_functions_serve_two_models_through_the_local_stack(stack: Stack) -> None:
    """One pre and one post function (an image without any model) for iris-onnx and diabetes-lightgbm;
    each model's own function runs only the model. Same answers as fused; the shared ones start once."""
    steps_image = "modelport/steps:test"
    empty = Path(tempfile.mkdtemp(prefix="steps-image-"))
    stack.images.register(
        steps_image, ProcessImage(Path(sys.executable), empty, REPO_ROOT, digest="sha256:" + "1" * 64)
    )
    lam = stack.client("lambda")
    sfn = stack.client("stepfunctions", inject_host_prefix=False)
    shared: dict[Role, str] = {
        role: create(
            lam,
            _name(f"steps-{role}"),
            steps_image,
            Environment={"Variables": {"MODELPORT_ROLE": role, "MODELPORT_SHARED_STAGE": "1"}},
        )["FunctionArn"]
        for role in ("pre", "post")
    }
    patients = EXAMPLES / "diabetes-lightgbm" / "samples" / "patients.csv"
    cases = [
        (IRIS, EXAMPLES / "iris-onnx", iris_event()),
        (DIABETES, EXAMPLES / "diabetes-lightgbm", _csv_event(patients, "image/png")),
    ]
    for image, src, event in cases:
        manifest: ModelConfigFile = config_file_for_dir(src)
        model_arn = create(
            lam, _name("model"), image, Environment={"Variables": {"MODELPORT_ROLE": "model"}}
        )["FunctionArn"]
        definition = state_machine_definition(
            manifest, {**shared, "model": model_arn}, shared=("pre", "post")
        )
        machine = sfn.create_state_machine(
            name=_name("shared"), definition=json.dumps(definition), roleArn=ROLE, type="EXPRESS"
        )["stateMachineArn"]
        fused = _name("fused")
        create(lam, fused, image)
        for _ in range(2):
            _, want = invoke(lam, fused, event)
            synced = sfn.start_sync_execution(stateMachineArn=machine, input=json.dumps(event))
            assert synced["status"] == "SUCCEEDED", synced
            got = json.loads(synced["output"])
            assert want["status"] == 200
            assert {k: got[k] for k in ("status", "content_type", "body")} == {
                k: want[k] for k in ("status", "content_type", "body")
            }
    assert [stack.emulator.started(arn) for arn in shared.values()] == [1, 1]


def test_the_function_manager_puts_models_that_plot_on_shared_stage_functions(stack: Stack) -> None:
    """Given a steps image, ``auto`` chains the models whose steps plot, on one shared pre/post pair for
    all of them; the others stay fused. Answers as fused; promotion leaves the shared pair alone."""
    steps_image = "modelport/steps:manager"
    empty = Path(tempfile.mkdtemp(prefix="steps-image-"))
    stack.images.register(
        steps_image, ProcessImage(Path(sys.executable), empty, REPO_ROOT, digest="sha256:" + "2" * 64)
    )
    stack.images.register("modelport/iris-onnx:shared", stack.images.resolve(IRIS))
    lam = stack.client("lambda")
    sfn = stack.client("stepfunctions", inject_host_prefix=False)
    manager = LambdaFunctionManager(lam, ROLE, sfn_client=sfn, wait_s=30)
    invoker = LambdaInvoker(lam, sfn)

    def auto(src: Path, image: str, version: int = 1) -> ModelConfigFile:
        container = ContainerAssociation(
            environment_image="env",
            image_uri=image,
            image_digest="sha256:" + "0" * 64,
            size_bytes=1,
            steps_image=steps_image,
        )
        manifest: ModelConfigFile = config_file_for_dir(src)
        update = {"name": _name(src.name), "version": version, "container": container}
        return with_plan(manifest.model_copy(update=update), shared_stages=True)  # stage functions shared

    iris = manager.deploy(auto(EXAMPLES / "iris-onnx", "modelport/iris-onnx:shared"), lambda line: None)
    diabetes = manager.deploy(auto(EXAMPLES / "diabetes-lightgbm", DIABETES), lambda line: None)
    for deployment in (iris, diabetes):
        assert deployment.mode == "chained"
        pre, model, post = deployment.functions
        assert pre.function_name.startswith("modelport-steps-") and pre.function_name.endswith("-pre")
        assert post.function_name.startswith("modelport-steps-") and post.function_name.endswith("-post")
        assert model.function_name.endswith("-model") and not model.function_name.startswith(
            "modelport-steps"
        )
    assert [f.function_name for f in iris.functions if f.role != "model"] == [
        f.function_name for f in diabetes.functions if f.role != "model"
    ]  # one shared pair
    assert [f.version for f in iris.functions if f.role != "model"] == [
        f.version for f in diabetes.functions if f.role != "model"
    ]  # the second deploy changed nothing of it
    sentiment = manager.deploy(auto(EXAMPLES / "sentiment-predictor", ECHO), lambda line: None)
    assert sentiment.mode == "fused"

    patients = EXAMPLES / "diabetes-lightgbm" / "samples" / "patients.csv"
    for deployment, image, event in (
        (iris, IRIS, iris_event()),
        (diabetes, DIABETES, _csv_event(patients, "application/json")),
    ):
        fused = _name("fused")
        create(lam, fused, image)
        _, want = invoke(lam, fused, event)
        got = invoker.invoke(deployment, event)
        assert (got["status"], got["content_type"], got["body"]) == (200, want["content_type"], want["body"])
        # what the bill prices: each stage's run, and the execution as StartSyncExecution billed it
        assert [run["role"] for run in got["runs"]] == [f.role for f in deployment.functions]
        assert got["execution"]["billed_mb"] == 64 and got["execution"]["billed_ms"] % 100 == 0
    assert stack.emulator.started(iris.functions[2].function_arn) == 1  # one post function, started once

    manager.promote(iris)
    with pytest.raises(ClientError):
        lam.get_alias(FunctionName=iris.functions[0].function_name, Name="live")
    assert lam.get_alias(FunctionName=iris.functions[1].function_name, Name="live")["FunctionVersion"] == "1"
