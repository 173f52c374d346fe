"""The chained pipeline as a Step Functions state machine, built as data (never from string templates).

Each stage is a Lambda Task that passes the whole document on and keeps the function's answer. A stage
that answers with an HTTP-style status of 400 or more (a bad payload, a model error) ends the execution
with that answer as its output, so the caller gets the same response document the fused function would
give. Lambda's transient errors are retried with backoff; anything else is caught into a Fail state.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from chalicelib.core.errors import ConfigError
from chalicelib.core.manifest import ModelConfigFile

Role = Literal["pre", "model", "post"]
Mode = Literal["fused", "chained"]

TRANSIENT_LAMBDA_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
STATE_NAMES: dict[Role, str] = {"pre": "Preprocess", "model": "Predict", "post": "Postprocess"}


def stages_of(manifest: ModelConfigFile) -> list[Role]:
    """The chain's functions: pre and post only where the config has steps."""
    roles: list[Role] = []
    if manifest.processing.pre:
        roles.append("pre")
    roles.append("model")
    if manifest.processing.post:
        roles.append("post")
    return roles


def user_code_steps(manifest: ModelConfigFile) -> list[str]:
    return [ref.step for ref in (*manifest.processing.pre, *manifest.processing.post) if ref.is_user_code]


def pipeline_mode(manifest: ModelConfigFile) -> Mode:
    """How ``manifest``'s version runs: what its config says, ``auto`` decided by ``auto_mode``.

    Chained mode refuses user-code steps: what user code returns need not be data the intermediate
    document between stages can carry (docs/pipelines.md)."""
    if manifest.pipeline == "fused":
        return "fused"
    if manifest.pipeline == "chained":
        user = user_code_steps(manifest)
        if user:
            raise ConfigError(
                f"pipeline: chained cannot run user-code steps ({', '.join(user)})",
                path="pipeline",
                hint="use pipeline: fused (or auto), or built-in steps only",
            )
        return "chained"
    return auto_mode(manifest)


SFN_STATE_LIMIT = 256 * 1024
"""Bytes Step Functions carries per state input or output (a fused function takes Lambda's 6 MB)."""


def auto_decision(manifest: ModelConfigFile) -> tuple[Mode, str]:
    """``pipeline: auto``, with the reason: fused, unless chaining gains something (docs/pipelines.md).

    Measured (bench/RESULTS.md, "Fused against chained"): the answers are byte-identical, a warm chain
    pays a Lambda invoke and a Task state per extra stage, and a cold chain starts one interpreter per
    stage one after another (each imports the runtime and pydantic). What a chain could save is the model
    function's cold start without the step packages (iris-onnx: the model role inits in about a tenth of
    the fused function's time, matplotlib's import and font cache being the rest) - but only when the
    pre/post functions are warm while the model's is cold. Every stage runs the model version's own image,
    so they are new, and cold, exactly when the model function is: nothing is saved and the chain is
    slower cold and warm. So auto chains nothing until stage functions are shared across versions
    (docs/pipelines.md, "Not yet"). The reasons are checked in order, the first that applies is given.
    """
    user = user_code_steps(manifest)
    if user:
        return "fused", f"user-code steps ({', '.join(user)}) run only fused"
    if len(stages_of(manifest)) == 1:
        return "fused", "no pre or post steps: a chain would be the model function plus a state machine"
    if manifest.protocol.request_value.kind == "image":
        return "fused", (
            f"the request is an encoded image: Step Functions carries {SFN_STATE_LIMIT // 1024} KiB per "
            "state, a fused function takes 6 MB"
        )
    return "fused", (
        "every stage would run this version's own image, cold when the model function is: a chain adds a "
        "cold interpreter per stage and a hop per warm call, and saves nothing"
    )


def auto_mode(manifest: ModelConfigFile) -> Mode:
    """``pipeline: auto``: see ``auto_decision``."""
    return auto_decision(manifest)[0]


def _task(function_arn: str, next_state: str) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
        "OutputPath": "$.Payload",
        "Retry": [
            {
                "ErrorEquals": TRANSIENT_LAMBDA_ERRORS,
                "IntervalSeconds": 1,
                "MaxAttempts": 3,
                "BackoffRate": 2.0,
            }
        ],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "StageFailed"}],
        "Next": next_state,
    }


def state_machine_definition(manifest: ModelConfigFile, function_arns: dict[Role, str]) -> dict[str, Any]:
    """The Amazon States Language document for ``manifest``'s chain; ARNs are placed as values only."""
    roles = stages_of(manifest)
    missing = [r for r in roles if r not in function_arns]
    if missing:
        raise ValueError(f"no function for stage(s) {', '.join(missing)}")
    states: dict[str, Any] = {}
    for i, role in enumerate(roles):
        name = STATE_NAMES[role]
        if i + 1 < len(roles):
            check = f"{name}Answered"
            states[name] = _task(function_arns[role], check)
            states[check] = {
                "Type": "Choice",
                "Choices": [{"Variable": "$.status", "NumericGreaterThanEquals": 400, "Next": "Answered"}],
                "Default": STATE_NAMES[roles[i + 1]],
            }
        else:
            states[name] = _task(function_arns[role], "Answered")
    states["Answered"] = {"Type": "Succeed"}
    states["StageFailed"] = {
        "Type": "Fail",
        "Error": "ModelportStageFailed",
        "Cause": f"a stage of {manifest.name} v{manifest.version} failed; see the execution history",
    }
    return {
        "Comment": f"Modelport pipeline of {manifest.name} v{manifest.version}",
        "StartAt": STATE_NAMES[roles[0]],
        "States": states,
    }


def definition_text(definition: dict[str, Any]) -> str:
    return json.dumps(definition, indent=2, sort_keys=True)
