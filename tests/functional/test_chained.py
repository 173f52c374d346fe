"""Chained pipelines through the local stack: pre/model/post functions on the Lambda emulator (process
mode), the state machine on moto behind the edge, ``StartSyncExecution``: the same answers as fused."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.manifest import ModelConfigFile
from chalicelib.core.pipeline import Role, stages_of, state_machine_definition
from chalicelib.services.intake import manifest_for_dir
from tests.functional.local_stack import EXAMPLES, ROLE, Stack, create, invoke, start_stack

pytestmark = pytest.mark.functional

DIABETES = "modelport/diabetes-lightgbm:v1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, aws_credentials: None) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    src = EXAMPLES / "diabetes-lightgbm"
    running.images.write(DIABETES, src, manifest_for_dir(src))
    yield running
    running.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _csv_event(path: Path, accept: str) -> dict[str, Any]:
    return {"body": path.read_text(), "content_type": "text/csv", "accept": accept}


def test_a_state_machine_of_stage_functions_answers_like_the_fused_function(stack: Stack) -> None:
    """diabetes-lightgbm: CSV -> tabular (pre) -> LightGBM (model) -> regression + scatter (post); the
    scatter plots against a request feature, so the request's table crosses two hops."""
    manifest: ModelConfigFile = manifest_for_dir(EXAMPLES / "diabetes-lightgbm")
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
