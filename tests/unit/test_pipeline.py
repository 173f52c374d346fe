"""The chained pipeline's state machine, built as data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.core.pipeline import (
    TRANSIENT_LAMBDA_ERRORS,
    definition_text,
    stages_of,
    state_machine_definition,
)
from chalicelib.services.intake import config_file_for_dir

ROOT = Path(__file__).resolve().parents[2]
ARNS = {r: f"arn:aws:lambda:us-east-1:000000000000:function:m-{r}" for r in ("pre", "model", "post")}


def test_a_full_chain_has_a_task_per_stage_and_short_circuits_on_error_statuses() -> None:
    manifest = config_file_for_dir(ROOT / "examples/iris-onnx")
    assert stages_of(manifest) == ["pre", "model", "post"]
    asl = state_machine_definition(manifest, ARNS)  # type: ignore[arg-type]
    assert asl["StartAt"] == "Preprocess"
    states = asl["States"]
    assert states["Preprocess"]["Next"] == "PreprocessAnswered"
    assert states["PreprocessAnswered"]["Default"] == "Predict"
    assert states["PredictAnswered"]["Default"] == "Postprocess"
    assert states["Postprocess"]["Next"] == "Answered"
    for name in ("Preprocess", "Predict", "Postprocess"):
        task = states[name]
        assert (
            task["Parameters"]["FunctionName"]
            == ARNS[{"Preprocess": "pre", "Predict": "model", "Postprocess": "post"}[name]]
        )
        assert task["Retry"][0]["ErrorEquals"] == TRANSIENT_LAMBDA_ERRORS
        assert task["Catch"][0]["Next"] == "StageFailed"
    choice = states["PreprocessAnswered"]["Choices"][0]
    assert choice == {"Variable": "$.status", "NumericGreaterThanEquals": 400, "Next": "Answered"}
    assert states["StageFailed"]["Type"] == "Fail"


@pytest.mark.parametrize(
    ("example", "roles"),
    [("diabetes-lightgbm", ["pre", "model", "post"]), ("sentiment-predictor", ["model"])],
)
def test_stages_follow_the_config(example: str, roles: list[str]) -> None:
    manifest = config_file_for_dir(ROOT / "examples" / example)
    assert stages_of(manifest) == roles
    asl = state_machine_definition(manifest, ARNS)  # type: ignore[arg-type]
    tasks = [s for s in asl["States"].values() if s["Type"] == "Task"]
    assert len(tasks) == len(roles)


def test_arns_are_values_never_structure() -> None:
    manifest = config_file_for_dir(ROOT / "examples/sentiment-predictor")
    hostile = 'arn"},\n"Injected": {"Type": "Pass'
    text = definition_text(state_machine_definition(manifest, {"model": hostile}))
    assert json.loads(text)["States"]["Predict"]["Parameters"]["FunctionName"] == hostile
    assert "Injected" not in json.loads(text)["States"]


def test_a_missing_function_is_an_error() -> None:
    manifest = config_file_for_dir(ROOT / "examples/iris-onnx")
    with pytest.raises(ValueError, match="no function for stage"):
        state_machine_definition(manifest, {"model": "arn"})


def test_the_longest_call_counts_the_model_and_the_tenants_own_stages() -> None:
    from chalicelib.core.config import StepRef
    from chalicelib.core.pipeline import API_DEADLINE_S, longest_call_s, with_plan

    iris = with_plan(config_file_for_dir(ROOT / "examples/iris-onnx"), shared_stages=True)
    assert iris.pipeline_plan is not None and iris.pipeline_plan.mode == "chained"
    assert longest_call_s(iris) == 10  # built-in steps do not count, whatever their functions' timeouts
    env = iris.environment.model_copy(update={"timeout_s": 40})
    assert longest_call_s(iris.model_copy(update={"environment": env})) == 40 > API_DEADLINE_S
    own = iris.processing.model_copy(update={"pre": (StepRef.model_validate("steps.py:clean"),)})
    assert longest_call_s(iris.model_copy(update={"processing": own})) == 20
    fused = with_plan(config_file_for_dir(ROOT / "examples/sentiment-predictor"), shared_stages=False)
    assert fused.pipeline_plan is not None and fused.pipeline_plan.mode == "fused"
    assert longest_call_s(fused) == 10
