"""The local ASL interpreter: paths, Retry, Catch, Choice, Fail, and what falls outside its subset."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.pipeline import state_machine_definition
from chalicelib.local.asl import LAMBDA_INVOKE, Unsupported, compile_machine, run
from chalicelib.local.awslambda.models import EmulatorInvocation, LambdaError
from chalicelib.services.intake import config_file_for_dir
from tests.support import ROOT

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"


class FakeLambda:
    """Functions by name: each takes the event and answers a document, raises LambdaError, or fails."""

    def __init__(self, **functions: Callable[[Any], Any]) -> None:
        self.functions = functions
        self.calls: list[tuple[str, str | None, Any]] = []

    def __call__(self, name: str, qualifier: str | None, payload: bytes) -> EmulatorInvocation:
        short = name.rsplit(":function:", 1)[-1].split(":")[0]
        self.calls.append((short, qualifier, json.loads(payload)))
        answer = self.functions[short](json.loads(payload))
        if isinstance(answer, Failure):
            doc = {"errorType": answer.error_type, "errorMessage": "boom"} if answer.error_type else {}
            return EmulatorInvocation(200, json.dumps(doc).encode(), "r", "1", function_error="Unhandled")
        return EmulatorInvocation(200, json.dumps(answer).encode(), "r", "1")


class Failure:
    def __init__(self, error_type: str | None) -> None:
        self.error_type = error_type


def throttled(times: int, then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    left = [times]

    def fn(event: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise LambdaError("TooManyRequestsException", "Rate exceeded", 429)
        return then(event)

    return fn


def task(function: str, **fields: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {"FunctionName": ARN + function, "Payload.$": "$"},
        "OutputPath": "$.Payload",
        **fields,
    }


def machine(states: dict[str, Any], start: str | None = None) -> dict[str, Any]:
    return {"StartAt": start or next(iter(states)), "States": states}


def out(outcome: Any) -> Any:
    assert outcome.status == "SUCCEEDED", outcome
    return json.loads(outcome.output)


def test_the_generated_pipeline_runs_three_stages_in_order() -> None:
    manifest: ModelConfigFile = config_file_for_dir(ROOT / "examples/iris-onnx")
    arns = {role: ARN + role for role in ("pre", "model", "post")}
    fake = FakeLambda(
        pre=lambda e: {**e, "status": 200, "seen": ["pre"]},
        model=lambda e: {**e, "seen": [*e["seen"], "model"]},
        post=lambda e: {**e, "seen": [*e["seen"], "post"]},
    )
    result = out(run(compile_machine(state_machine_definition(manifest, arns)), {"x": 1}, fake))
    assert result == {"x": 1, "status": 200, "seen": ["pre", "model", "post"]}
    assert [c[0] for c in fake.calls] == ["pre", "model", "post"]


def test_a_stage_answering_an_error_status_ends_the_chain_with_that_answer() -> None:
    manifest: ModelConfigFile = config_file_for_dir(ROOT / "examples/iris-onnx")
    arns = {role: ARN + role for role in ("pre", "model", "post")}
    fake = FakeLambda(pre=lambda e: {"status": 400, "body": "bad"}, model=lambda e: e, post=lambda e: e)
    assert out(run(compile_machine(state_machine_definition(manifest, arns)), {}, fake)) == {
        "status": 400,
        "body": "bad",
    }
    assert [c[0] for c in fake.calls] == ["pre"]


def test_input_result_and_output_paths_and_parameters() -> None:
    definition = machine(
        {
            "Shape": {
                "Type": "Pass",
                "InputPath": "$.request",
                "Parameters": {"values.$": "$.values", "first.$": "$.values[0]", "fixed": {"k": 1}},
                "ResultPath": "$.shaped.inner",
                "Next": "Call",
            },
            "Call": {
                "Type": "Task",
                "Resource": ARN + "sum",  # a bare Lambda ARN: the result is the function's answer
                "InputPath": "$.shaped.inner",
                "ResultPath": "$.total",
                "OutputPath": "$",
                "Next": "Keep",
            },
            "Keep": {"Type": "Pass", "Result": {"done": True}, "ResultPath": "$['flag']", "Next": "Drop"},
            "Drop": {"Type": "Pass", "ResultPath": None, "Result": "ignored", "End": True},
        }
    )
    fake = FakeLambda(sum=lambda e: sum(e["values"]) + e["first"] + e["fixed"]["k"])
    result = out(run(compile_machine(definition), {"request": {"values": [1, 2, 3]}, "other": 0}, fake))
    assert result == {
        "request": {"values": [1, 2, 3]},
        "other": 0,
        "shaped": {"inner": {"values": [1, 2, 3], "first": 1, "fixed": {"k": 1}}},
        "total": 8,
        "flag": {"done": True},
    }
    assert fake.calls == [("sum", None, {"values": [1, 2, 3], "first": 1, "fixed": {"k": 1}})]


def test_lambda_invoke_result_shape_and_the_context_object() -> None:
    definition = machine(
        {
            "Call": {
                "Type": "Task",
                "Resource": LAMBDA_INVOKE,
                "Parameters": {
                    "FunctionName": "echo",
                    "Qualifier": "live",
                    "Payload": {"name.$": "$$.Execution.Name", "input.$": "$$.Execution.Input"},
                },
                "End": True,
            }
        }
    )
    fake = FakeLambda(echo=lambda e: e)
    result = out(run(compile_machine(definition), {"a": 1}, fake, context={"Execution": {"Name": "run-1"}}))
    assert result == {
        "ExecutedVersion": "1",
        "StatusCode": 200,
        "Payload": {"name": "run-1", "input": {"a": 1}},
    }
    assert fake.calls[0][:2] == ("echo", "live")


def test_retry_backs_off_then_succeeds_and_gives_up_after_max_attempts() -> None:
    retry = [
        {
            "ErrorEquals": ["Lambda.TooManyRequestsException"],
            "IntervalSeconds": 1,
            "MaxAttempts": 2,
            "BackoffRate": 3.0,
        }
    ]
    definition = machine({"Call": task("f", Retry=retry, End=True)})
    slept: list[float] = []
    fake = FakeLambda(f=throttled(2, lambda e: {"ok": True}))
    assert out(run(compile_machine(definition), {}, fake, sleep=slept.append)) == {"ok": True}
    assert slept == [1.0, 3.0]

    slept.clear()
    fake = FakeLambda(f=throttled(3, lambda e: {"ok": True}))
    outcome = run(compile_machine(definition), {}, fake, sleep=slept.append)
    assert (outcome.status, outcome.error) == ("FAILED", "Lambda.TooManyRequestsException")
    assert "Rate exceeded" in (outcome.cause or "") and slept == [1.0, 3.0] and len(fake.calls) == 3


def test_catch_puts_the_error_at_its_result_path_and_goes_on() -> None:
    definition = machine(
        {
            "Call": task(
                "f",
                Catch=[
                    {"ErrorEquals": ["Other"], "Next": "Wrong"},
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Handled"},
                ],
                End=True,
            ),
            "Wrong": {"Type": "Fail", "Error": "Wrong"},
            "Handled": {"Type": "Pass", "End": True},
        }
    )
    outcome = run(compile_machine(definition), {"in": 1}, FakeLambda(f=lambda e: Failure("ModelError")))
    result = out(outcome)
    assert result["in"] == 1 and result["error"]["Error"] == "ModelError"
    assert json.loads(result["error"]["Cause"]) == {"errorType": "ModelError", "errorMessage": "boom"}

    untyped = run(compile_machine(definition), {}, FakeLambda(f=lambda e: Failure(None)))
    assert out(untyped)["error"]["Error"] == "States.TaskFailed"


def test_errors_of_the_lambda_api_are_named_lambda_and_task_failed_matches_them() -> None:
    def missing(event: Any) -> Any:
        raise LambdaError("ResourceNotFoundException", "Function not found", 404)

    definition = machine(
        {
            "Call": task("f", Catch=[{"ErrorEquals": ["States.TaskFailed"], "Next": "Failed"}], End=True),
            "Failed": {"Type": "Fail", "ErrorPath": "$.Error", "CausePath": "$.Cause"},
        }
    )
    outcome = run(compile_machine(definition), {}, FakeLambda(f=missing))
    assert (outcome.status, outcome.error) == ("FAILED", "Lambda.ResourceNotFoundException")
    assert "Status Code: 404" in (outcome.cause or "")


@pytest.mark.parametrize(
    ("value", "branch"),
    [
        ({"status": 500, "kind": "x"}, "High"),
        ({"status": 200, "kind": "image/png"}, "Image"),
        ({"status": 200, "kind": "text", "flag": True}, "Flag"),
        ({"status": 200, "kind": "text", "limit": 250}, "UnderLimit"),
        ({"status": 200, "kind": "text"}, "Other"),
        ({"status": "500", "kind": 3}, "Other"),  # a comparison of the wrong type is false
    ],
)
def test_choice_rules(value: dict[str, Any], branch: str) -> None:
    definition = machine(
        {
            "Pick": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.status", "NumericGreaterThanEquals": 400, "Next": "High"},
                    {"Variable": "$.kind", "StringMatches": "image/*", "Next": "Image"},
                    {
                        "And": [
                            {"Variable": "$.flag", "IsPresent": True},
                            {"Variable": "$.flag", "BooleanEquals": True},
                        ],
                        "Next": "Flag",
                    },
                    {
                        "And": [
                            {"Variable": "$.limit", "IsNumeric": True},
                            {"Not": {"Variable": "$.status", "NumericGreaterThanPath": "$.limit"}},
                        ],
                        "Next": "UnderLimit",
                    },
                    {"Or": [{"Variable": "$.kind", "StringEquals": "never"}], "Next": "High"},
                ],
                "Default": "Other",
            },
            **{
                name: {"Type": "Pass", "Result": name, "End": True}
                for name in ("High", "Image", "Flag", "UnderLimit", "Other")
            },
        }
    )
    assert out(run(compile_machine(definition), value, FakeLambda())) == branch


def test_choice_without_a_match_and_a_missing_variable_fail_the_execution() -> None:
    rules = [{"Variable": "$.n", "NumericEquals": 1, "Next": "Done"}]
    definition = machine({"Pick": {"Type": "Choice", "Choices": rules}, "Done": {"Type": "Succeed"}})
    assert run(compile_machine(definition), {"n": 2}, FakeLambda()).error == "States.NoChoiceMatched"
    missing = run(compile_machine(definition), {}, FakeLambda())
    assert (missing.status, missing.error) == ("FAILED", "States.Runtime")


def test_a_missing_path_is_a_runtime_error_that_states_all_does_not_catch() -> None:
    definition = machine(
        {
            "Call": {
                **task("f", Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Caught"}], End=True),
                "Parameters": {"FunctionName": ARN + "f", "Payload.$": "$.nowhere"},
            },
            "Caught": {"Type": "Succeed"},
        }
    )
    outcome = run(compile_machine(definition), {}, FakeLambda(f=lambda e: e))
    assert (outcome.status, outcome.error) == ("FAILED", "States.Runtime")
    assert "$.nowhere" in (outcome.cause or "")


def test_fail_and_succeed_states() -> None:
    failing = machine({"Stop": {"Type": "Fail", "Error": "Custom", "Cause": "because"}})
    assert run(compile_machine(failing), {}, FakeLambda()).__dict__ == {
        "status": "FAILED",
        "output": None,
        "error": "Custom",
        "cause": "because",
    }
    succeeding = machine({"Done": {"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"}})
    assert out(run(compile_machine(succeeding), {"a": {"b": [1]}}, FakeLambda())) == [1]


def test_task_timeout_and_the_execution_deadline() -> None:
    import time

    definition = machine({"Call": task("slow", TimeoutSeconds=0.05, End=True)})  # type: ignore[arg-type]
    outcome = run(compile_machine(definition), {}, FakeLambda(slow=lambda e: time.sleep(0.5) or e))
    assert (outcome.status, outcome.error) == ("FAILED", "States.Timeout")

    ticks = iter([0.0, 0.0, 10.0, 10.0])
    looping = machine({"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "End": True}})
    expired = run(compile_machine(looping), {}, FakeLambda(), timeout_s=5, clock=lambda: next(ticks))
    assert (expired.status, expired.error) == ("TIMED_OUT", "States.Timeout")


@pytest.mark.parametrize(
    "definition",
    [
        machine({"M": {"Type": "Map", "End": True}}),
        machine({"W": {"Type": "Wait", "Seconds": 1, "End": True}}),
        machine({"P": {"Type": "Pass", "Parameters": {"x.$": "States.Format('{}', $.a)"}, "End": True}}),
        machine({"P": {"Type": "Pass", "InputPath": "$.items[*]", "End": True}}),
        machine({"T": {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage", "End": True}}),
        machine({"T": {**task("f"), "Resource": LAMBDA_INVOKE + ".waitForTaskToken", "End": True}}),
        machine(
            {"C": {"Type": "Choice", "Choices": [{"Variable": "$.t", "TimestampEquals": "x", "Next": "C"}]}}
        ),
        {"QueryLanguage": "JSONata", **machine({"S": {"Type": "Succeed"}})},
        machine({"P": {"Type": "Pass", "Next": "Nowhere"}}),
    ],
)
def test_definitions_outside_the_subset_are_refused(definition: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        compile_machine(definition)
