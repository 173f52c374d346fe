"""Which functions a deployment has, fused or chained, and how Step Functions failures surface."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib.aws.functions import LambdaFunctionManager, function_specs
from chalicelib.core.config import Processing
from chalicelib.core.config_file import ContainerAssociation, ModelConfigFile
from chalicelib.core.errors import ConfigError, FunctionFailed
from chalicelib.core.pipeline import auto_decision, pipeline_mode, with_plan
from chalicelib.services.intake import config_file_for_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelport/iris:v1"


def _config_file(
    example: str, pipeline: str, *, steps_image: str | None = None, **update: Any
) -> ModelConfigFile:
    container = ContainerAssociation(
        environment_image="env",
        image_uri=IMAGE,
        image_digest="sha256:" + "0" * 64,
        size_bytes=1,
        steps_image=steps_image,
    )
    manifest: ModelConfigFile = config_file_for_dir(EXAMPLES / example)
    return manifest.model_copy(update={"pipeline": pipeline, "container": container, **update})


def _manifest(
    example: str, pipeline: str, *, steps_image: str | None = None, **update: Any
) -> ModelConfigFile:
    """The config file as intake plans it; ``steps_image``: built where stage functions are shared."""
    manifest = _config_file(example, pipeline, steps_image=steps_image, **update)
    return with_plan(manifest, shared_stages=steps_image is not None)


def test_a_chained_deployment_has_one_function_per_stage_that_exists() -> None:
    specs = function_specs(_manifest("iris-onnx", "chained"))
    assert [(s.role, s.name, s.environment.get("MODELPORT_ROLE")) for s in specs] == [
        ("pre", "modelport-iris-onnx-pre", "pre"),
        ("model", "modelport-iris-onnx-model", "model"),
        ("post", "modelport-iris-onnx-post", "post"),
    ]
    assert {s.image_uri for s in specs} == {IMAGE} and {s.memory_mb for s in specs} == {512}
    (only,) = function_specs(_manifest("sentiment-predictor", "chained"))  # no steps: no pre, no post
    assert (only.role, only.environment["MODELPORT_ROLE"]) == ("model", "model")
    (fused,) = function_specs(_manifest("iris-onnx", "fused"))
    assert (fused.name, "MODELPORT_ROLE" in fused.environment) == ("modelport-iris-onnx", False)


def test_chained_mode_refuses_user_code_steps() -> None:
    processing = Processing.model_validate({"pre": ["steps/clean.py:clean"], "post": ["labels"]})
    manifest = _config_file("iris-onnx", "chained", processing=processing)
    with pytest.raises(ConfigError, match=r"chained cannot run user-code steps \(steps/clean.py:clean\)"):
        pipeline_mode(manifest)
    assert pipeline_mode(manifest.model_copy(update={"pipeline": "auto"})) == "fused"


class FailingStepFunctions:
    """A Step Functions client that has no machine and refuses to create one."""

    def __init__(self, code: str, message: str) -> None:
        self.error = {"Error": {"Code": code, "Message": message}}
        self.calls: list[str] = []

    def describe_state_machine(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("describe")
        raise ClientError({"Error": {"Code": "StateMachineDoesNotExist", "Message": "no"}}, "Describe")

    def create_state_machine(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("create")
        raise ClientError(self.error, "CreateStateMachine")


@pytest.fixture
def lambda_client(aws_credentials: None) -> Iterator[tuple[Any, str]]:
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                 "Principal": {"Service": "lambda.amazonaws.com"}}]}  # fmt: skip
        role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        yield boto3.client("lambda", region_name="us-east-1"), role


def test_step_functions_errors_are_function_failures(lambda_client: tuple[Any, str]) -> None:
    lam, role = lambda_client
    manifest = _manifest("iris-onnx", "chained")
    with pytest.raises(FunctionFailed, match="no Step Functions client"):
        LambdaFunctionManager(lam, role).deploy(manifest, lambda line: None)
    sfn = FailingStepFunctions("ValidationException", "bad definition")
    manager = LambdaFunctionManager(lam, role, sfn_client=sfn, sleep=lambda s: None)
    with pytest.raises(
        FunctionFailed, match="CreateStateMachine failed: ValidationException: bad definition"
    ):
        manager.deploy(manifest, lambda line: None)
    assert sfn.calls == ["describe", "create"]
    # a role Step Functions cannot assume yet (IAM propagation) is retried until the wait runs out
    slow = FailingStepFunctions("AccessDeniedException", "states.amazonaws.com is not authorized to assume")
    manager = LambdaFunctionManager(lam, role, sfn_client=slow, sleep=lambda s: None, wait_s=2)
    with pytest.raises(FunctionFailed, match="AccessDeniedException"):
        manager.deploy(manifest, lambda line: None)
    assert slow.calls.count("create") > 1


@pytest.mark.parametrize(
    ("example", "reason"),
    [
        ("sentiment-predictor", "no pre or post steps"),
        ("digits-onnx", "the request is an encoded image"),
        ("iris-onnx", "every stage would run this version's own image"),
        ("iris-skops", "every stage would run this version's own image"),
        ("diabetes-lightgbm", "every stage would run this version's own image"),
    ],
)
def test_auto_runs_every_example_fused_and_says_why(example: str, reason: str) -> None:
    manifest = _manifest(example, "auto")
    mode, why = auto_decision(manifest)
    assert (mode, why.startswith(reason)) == ("fused", True), why
    assert pipeline_mode(manifest) == "fused"
    assert pipeline_mode(manifest.model_copy(update={"pipeline": "chained"})) == "chained"
    processing = Processing.model_validate({"pre": ["steps/clean.py:clean"]})
    user = manifest.model_copy(update={"processing": processing})
    assert auto_decision(user) == ("fused", "user-code steps (steps/clean.py:clean) run only fused")


def test_with_shared_stage_functions_auto_chains_models_whose_steps_plot() -> None:
    for example in ("iris-onnx", "iris-skops", "diabetes-lightgbm"):
        mode, why = auto_decision(_manifest(example, "auto"), shared_stages=True)
        assert (mode, why.startswith("the steps need matplotlib")) == ("chained", True), why
    labels_only = _manifest("iris-onnx", "auto")
    labels_only = labels_only.model_copy(
        update={"processing": Processing.model_validate({"pre": ["tabular"], "post": ["labels"]})}
    )
    assert auto_decision(labels_only, shared_stages=True)[0] == "fused"
    assert auto_decision(_manifest("digits-onnx", "auto"), shared_stages=True)[0] == "fused"  # an image
    assert auto_decision(_manifest("sentiment-predictor", "auto"), shared_stages=True)[0] == "fused"


def test_shared_stage_specs_are_the_same_for_every_model() -> None:
    steps = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelport/steps:py3.11"
    iris = function_specs(_manifest("iris-onnx", "auto", steps_image=steps))
    diabetes = function_specs(_manifest("diabetes-lightgbm", "auto", version=7, steps_image=steps))
    assert [s.role for s in iris] == ["pre", "model", "post"]  # auto chains: the steps plot
    assert [iris[0], iris[2]] == [diabetes[0], diabetes[2]]
    assert iris[0].image_uri == steps and iris[0].name.startswith("modelport-steps-")
    assert iris[0].environment == {"MODELPORT_ROLE": "pre", "MODELPORT_SHARED_STAGE": "1"}
    assert (iris[1].name, iris[1].image_uri, diabetes[1].environment["MODELPORT_VERSION"]) == (
        "modelport-iris-onnx-model",
        IMAGE,
        "7",
    )
    assert [s.role for s in function_specs(_manifest("digits-onnx", "auto", steps_image=steps))] == ["fused"]
    other = function_specs(_manifest("iris-onnx", "chained", steps_image=steps + "-2"))
    assert other[0].name != iris[0].name  # another steps image, another shared pair


def test_a_function_not_made_for_the_model_is_never_taken_over(lambda_client: tuple[Any, str]) -> None:
    """A model named after another function of the account (the deploy worker, the API, a probe) must
    not get that function's code replaced with its own image: the ``modelport:model`` tag decides."""
    lam, role = lambda_client
    lam.create_function(
        FunctionName="modelport-victim", Role=role, PackageType="Image",
        Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/platform:worker"},
    )  # fmt: skip
    manifest = _manifest("iris-onnx", "fused").model_copy(update={"name": "victim"})
    with pytest.raises(FunctionFailed, match="exists and is not 'victim''s"):
        LambdaFunctionManager(lam, role, sleep=lambda s: None).deploy(manifest, lambda line: None)
    got = lam.get_function(FunctionName="modelport-victim")
    assert got["Code"]["ImageUri"].endswith("/platform:worker")
    # its own function (tagged at creation) is updated in place on the next deploy
    own = _manifest("iris-onnx", "fused").model_copy(update={"name": "mine"})
    LambdaFunctionManager(lam, role, sleep=lambda s: None).deploy(own, lambda line: None)
    LambdaFunctionManager(lam, role, sleep=lambda s: None).deploy(own, lambda line: None)
    assert lam.get_function(FunctionName="modelport-mine")["Tags"] == {"modelport:model": "mine"}


class Recording:
    """A boto3 client whose calls are recorded by name (the calls themselves go through)."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            return method(**kwargs)

        return call


def test_functions_and_machines_are_traced_and_log_their_failed_executions(
    lambda_client: tuple[Any, str],
) -> None:
    """Active X-Ray tracing on every function, tracing and the shared execution log on the machine; a
    redeploy of the same configuration changes nothing, and one of an older machine brings it up to it."""
    lam, role = lambda_client
    sfn = Recording(boto3.client("stepfunctions", region_name="us-east-1"))
    group = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/vendedlogs/states/modelport-dev:*"
    manifest = _manifest("iris-onnx", "chained")
    manager = LambdaFunctionManager(
        lam, role, sfn_client=sfn, states_log_group_arn=group, sleep=lambda s: None
    )
    deployed = manager.deploy(manifest, lambda line: None)
    assert deployed.state_machine_arn is not None
    for function in deployed.functions:
        config = lam.get_function(FunctionName=function.function_name)["Configuration"]
        assert config["TracingConfig"] == {"Mode": "Active"}
    machine = sfn.client.describe_state_machine(stateMachineArn=deployed.state_machine_arn)
    assert machine["tracingConfiguration"] == {"enabled": True}
    assert machine["loggingConfiguration"] == {
        "level": "ERROR",
        "includeExecutionData": False,
        "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": group}}],
    }
    sfn.calls.clear()
    manager.deploy(manifest, lambda line: None)
    assert sfn.calls == ["describe_state_machine"]  # nothing to update
    # a machine from before tracing (same definition and role): the next deploy updates it
    sfn.client.update_state_machine(
        stateMachineArn=deployed.state_machine_arn,
        loggingConfiguration={"level": "OFF"},
        tracingConfiguration={"enabled": False},
    )
    sfn.calls.clear()
    manager.deploy(manifest, lambda line: None)
    assert sfn.calls == ["describe_state_machine", "update_state_machine"]
    machine = sfn.client.describe_state_machine(stateMachineArn=deployed.state_machine_arn)
    assert machine["tracingConfiguration"] == {"enabled": True}
    assert machine["loggingConfiguration"]["level"] == "ERROR"


def test_without_a_log_group_the_machines_log_to_the_default_one_in_their_account(
    lambda_client: tuple[Any, str],
) -> None:
    lam, role = lambda_client
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    manager = LambdaFunctionManager(lam, role, sfn_client=sfn, sleep=lambda s: None)
    deployed = manager.deploy(_manifest("iris-onnx", "chained"), lambda line: None)
    assert deployed.state_machine_arn is not None
    machine = sfn.describe_state_machine(stateMachineArn=deployed.state_machine_arn)
    (destination,) = machine["loggingConfiguration"]["destinations"]
    assert destination["cloudWatchLogsLogGroup"]["logGroupArn"] == (
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/vendedlogs/states/modelport:*"
    )
    with pytest.raises(FunctionFailed, match="not a CloudWatch Logs group ARN"):
        LambdaFunctionManager(lam, role, sfn_client=sfn, states_log_group_arn="arn:aws:logs:x:y:log-group:g")
