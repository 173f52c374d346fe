"""StartSyncExecution in the edge's own interpreter: the same answers as moto's, definitions re-read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.core.pipeline import state_machine_definition
from chalicelib.services.intake import config_file_for_dir
from tests.functional.local_stack import ECHO, EXAMPLES, ROLE, Stack, create, echo_event, start_stack

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, aws_credentials: None) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


def _machine(stack: Stack, definition: dict[str, Any]) -> str:
    sfn = stack.client("stepfunctions")
    return str(
        sfn.create_state_machine(
            name=f"m-{uuid.uuid4().hex[:8]}", definition=json.dumps(definition), roleArn=ROLE, type="EXPRESS"
        )["stateMachineArn"]
    )


def _sync(stack: Stack, machine: str, event: dict[str, Any], *, fast: bool = True) -> dict[str, Any]:
    sfn = stack.client("stepfunctions", inject_host_prefix=False)
    stack.edge.fast_sync = fast
    try:
        return dict(sfn.start_sync_execution(stateMachineArn=machine, input=json.dumps(event)))
    finally:
        stack.edge.fast_sync = True


def test_a_three_task_pipeline_gives_the_same_answer_in_process_and_on_moto(stack: Stack) -> None:
    arn = create(stack.client("lambda"), f"echo-{uuid.uuid4().hex[:8]}", ECHO)["FunctionArn"]
    manifest = config_file_for_dir(EXAMPLES / "iris-onnx")  # pre and post steps: three Task states
    machine = _machine(stack, state_machine_definition(manifest, {"pre": arn, "model": arn, "post": arn}))
    event = echo_event([1.5, 2.5])

    fast = _sync(stack, machine, event)
    slow = _sync(stack, machine, event, fast=False)
    assert fast["status"] == slow["status"] == "SUCCEEDED", (fast, slow)
    untimed = [
        {k: v for k, v in json.loads(a["output"]).items() if k not in ("timings", "runs")}
        for a in (fast, slow)
    ]
    assert untimed[0] == untimed[1]  # the runtime's own stage timings (and runs) differ from run to run
    assert json.loads(json.loads(fast["output"])["body"]) == {"output": [1.5, 2.5]}
    assert ":express:" in fast["executionArn"] and ":express:" not in slow["executionArn"]
    for key in ("stateMachineArn", "name", "input", "billingDetails", "inputDetails", "outputDetails"):
        assert key in fast and key in slow, key
    assert fast["stopDate"] >= fast["startDate"]


def test_a_failing_stage_fails_alike(stack: Stack) -> None:
    lam = stack.client("lambda")
    arn = create(lam, f"slow-{uuid.uuid4().hex[:8]}", ECHO, Timeout=1)["FunctionArn"]
    manifest = config_file_for_dir(EXAMPLES / "iris-onnx")
    machine = _machine(stack, state_machine_definition(manifest, {"pre": arn, "model": arn, "post": arn}))
    fast = _sync(stack, machine, echo_event([1.0], 2.0))
    slow = _sync(stack, machine, echo_event([1.0], 2.0), fast=False)
    assert (
        (fast["status"], fast["error"])
        == (slow["status"], slow["error"])
        == ("FAILED", "ModelportStageFailed")
    )


def test_an_update_is_seen_and_a_definition_outside_the_subset_runs_on_moto(stack: Stack) -> None:
    sfn = stack.client("stepfunctions")
    machine = _machine(
        stack, {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": "one", "End": True}}}
    )
    assert json.loads(_sync(stack, machine, {})["output"]) == "one"

    two = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": "two", "End": True}}}
    sfn.update_state_machine(stateMachineArn=machine, definition=json.dumps(two))
    assert json.loads(_sync(stack, machine, {})["output"]) == "two"

    waiting = {
        "StartAt": "W",
        "States": {
            "W": {"Type": "Wait", "Seconds": 0, "Next": "P"},
            "P": {"Type": "Pass", "Result": 3, "End": True},
        },
    }
    sfn.update_state_machine(stateMachineArn=machine, definition=json.dumps(waiting))
    answer = _sync(stack, machine, {})
    assert answer["status"] == "SUCCEEDED" and json.loads(answer["output"]) == 3
    assert ":express:" not in answer["executionArn"]  # moto ran it

    sfn.delete_state_machine(stateMachineArn=machine)
    with pytest.raises(Exception, match=r"StateMachineDoesNotExist|does not exist"):
        _sync(stack, machine, {})
