"""The chained pipeline as a Step Functions state machine, built as data (never from string templates).

Each stage is a Lambda Task that passes the whole document on and keeps the function's answer. A stage
that answers with an HTTP-style status of 400 or more (a bad payload, a model error) ends the execution
with that answer as its output, so the caller gets the same response document the fused function would
give. Lambda's transient errors are retried with backoff; anything else is caught into a Fail state.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, Literal

from chalicelib.core.config_file import ModelConfigFile, PipelinePlan
from chalicelib.core.environment import ResolvedEnvironment, split_environment
from chalicelib.core.errors import ConfigError
from chalicelib.core.steps import BUILTIN_STEPS

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


API_DEADLINE_S = 29
"""API Gateway's integration timeout: a synchronous call that may run longer is answered as a job."""


def longest_call_s(manifest: ModelConfigFile) -> int:
    """How long a synchronous call of ``manifest`` may run by its configuration: the function's timeout
    (fused), or the model stage's plus that of each pre/post stage running the tenant's own code
    (chained). Built-in steps take milliseconds whatever their function's timeout, so they do not count."""
    timeout = manifest.environment.timeout_s
    if recorded_plan(manifest).mode == "fused":
        return timeout
    processing = manifest.processing
    own = sum(any(ref.is_user_code for ref in refs) for refs in (processing.pre, processing.post))
    return timeout * (1 + own)


def plan_pipeline(manifest: ModelConfigFile, *, shared_stages: bool) -> PipelinePlan:
    """The one place fused against chained is decided: what the config says, ``auto`` by
    ``auto_decision``. ``shared_stages``: the platform has shared stage functions (a steps image per
    environment), so a chain's pre and post run there. Intake records the answer in the config file
    (``ModelConfigFile.pipeline_plan``); the builders and the function manager only read it.

    Chained mode refuses user-code steps: what user code returns need not be data the intermediate
    document between stages can carry (docs/pipelines.md)."""
    mode: Mode
    if manifest.pipeline == "fused":
        mode, reason = "fused", "the config says pipeline: fused"
    elif manifest.pipeline == "chained":
        user = user_code_steps(manifest)
        if user:
            raise ConfigError(
                f"pipeline: chained cannot run user-code steps ({', '.join(user)})",
                path="pipeline",
                hint="use pipeline: fused (or auto), or built-in steps only",
            )
        mode, reason = "chained", "the config says pipeline: chained"
    else:
        mode, reason = auto_decision(manifest, shared_stages=shared_stages)
    return PipelinePlan(mode=mode, reason=reason, shared_steps=mode == "chained" and shared_stages)


def pipeline_mode(manifest: ModelConfigFile, *, shared_stages: bool = False) -> Mode:
    """The mode ``plan_pipeline`` gives ``manifest`` (for callers that need only the mode)."""
    return plan_pipeline(manifest, shared_stages=shared_stages).mode


def with_plan(manifest: ModelConfigFile, *, shared_stages: bool) -> ModelConfigFile:
    """``manifest`` with its pipeline plan recorded."""
    return manifest.model_copy(update={"pipeline_plan": plan_pipeline(manifest, shared_stages=shared_stages)})


def recorded_plan(manifest: ModelConfigFile) -> PipelinePlan:
    """The plan intake recorded; a config file without one was not made by intake (or by an older one)."""
    if manifest.pipeline_plan is None:
        raise ConfigError(
            f"the config file of {manifest.name} v{manifest.version} records no pipeline plan",
            path="pipeline_plan",
            hint="generate it again (modelport manifest, or upload the bundle again)",
        )
    return manifest.pipeline_plan


def stage_environments(manifest: ModelConfigFile) -> tuple[ResolvedEnvironment, ResolvedEnvironment | None]:
    """(the model image's environment, the shared steps image's or None), as the recorded plan implies:
    where pre and post run on the shared steps image, the model's image goes without the step packages."""
    if recorded_plan(manifest).shared_steps:
        return split_environment(manifest.environment, manifest.processing)
    return manifest.environment, None


SHARED_STAGE_PREFIX = "modelport-steps-"
"""Every shared stage function's name starts so (``modelport-steps-<digest>-<role>``)."""

SHARED_STAGE_MEMORY_MB = 1024
SHARED_STAGE_TIMEOUT_S = 60
"""Shared stage functions serve many models, so they are not sized by one: 1 GB and a minute cover the
built-in steps (a chart is ~6 ms; a 40-megapixel image decode is the largest pre step)."""


def function_memory_mb(manifest: ModelConfigFile, role: str) -> int:
    """The memory of the function that runs ``role`` of ``manifest``, as the function manager sizes it
    (what its invocations bill): a shared stage function's own, else the model's."""
    plan = manifest.pipeline_plan
    shared = (
        plan is not None
        and plan.shared_steps
        and manifest.container is not None
        and manifest.container.steps_image is not None
    )
    return SHARED_STAGE_MEMORY_MB if shared and role in ("pre", "post") else manifest.environment.memory_mb


SFN_STATE_LIMIT = 256 * 1024
"""Bytes Step Functions carries per state input or output (a fused function takes Lambda's 6 MB)."""


def step_packages(manifest: ModelConfigFile) -> set[str]:
    """The packages the model's built-in steps add to its environment (matplotlib, pillow)."""
    refs = (*manifest.processing.pre, *manifest.processing.post)
    return {p for ref in refs if ref.step in BUILTIN_STEPS for p in BUILTIN_STEPS[ref.step].packages}


def auto_decision(manifest: ModelConfigFile, *, shared_stages: bool = False) -> tuple[Mode, str]:
    """``pipeline: auto``, with the reason: fused, unless chaining gains something (docs/pipelines.md).

    Measured (bench/RESULTS.md, "Fused against chained"): the answers are byte-identical, a warm chain
    pays a Lambda invoke and a Task state per extra stage (~1.2 ms each locally), and a cold chain of the
    version's own functions starts one interpreter per stage one after another, so it is slower cold and
    warm and saves nothing. What a chain can save is the model function's cold start without the step
    packages - iris-onnx's model role inits in a third of the fused function's time, matplotlib's import and
    font list being the rest - when the pre/post functions are warm while the model's is cold: shared stage
    functions (``shared_stages``; iris-onnx cold 296 ms shared-chained against 580 ms fused). So with shared
    stages a model whose steps need matplotlib is chained; without them nothing is. The reasons are checked
    in order, the first that applies is given.
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
    if not shared_stages:
        return "fused", (
            "every stage would run this version's own image, cold when the model function is: a chain adds "
            "a cold interpreter per stage and a hop per warm call, and saves nothing"
        )
    if "matplotlib" not in step_packages(manifest):
        return "fused", "the steps need no plotting packages: a shared stage saves less than its hops cost"
    return "chained", (
        "the steps need matplotlib: on warm shared stage functions the model's own function starts without "
        "it, about half the fused cold start"
    )


def shared_config_text(manifest: ModelConfigFile) -> str:
    """The model config a shared stage function gets in its Task's Parameters: the file without its
    container and deployment slots (a shared function runs no image of the model), as compact JSON text
    (a string, so Step Functions never reads its keys as paths)."""
    data = manifest.model_copy(update={"container": None, "deployment": None}).to_data()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _task(function_arn: str, next_state: str, shared_config: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = (
        {"Payload.$": "$"} if shared_config is None else {"Payload": {"model": shared_config, "input.$": "$"}}
    )
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, **payload},
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


def state_machine_definition(
    manifest: ModelConfigFile, function_arns: dict[Role, str], *, shared: Collection[Role] = ()
) -> dict[str, Any]:
    """The Amazon States Language document for ``manifest``'s chain; ARNs are placed as values only.
    The stages in ``shared`` run on functions shared across models: their Tasks pass the model's config
    along with the document (``shared_config_text``)."""
    roles = stages_of(manifest)
    if "model" in shared:
        raise ValueError("the model stage runs the model's own image; only pre and post can be shared")
    config = shared_config_text(manifest) if shared else None
    missing = [r for r in roles if r not in function_arns]
    if missing:
        raise ValueError(f"no function for stage(s) {', '.join(missing)}")
    states: dict[str, Any] = {}
    for i, role in enumerate(roles):
        name = STATE_NAMES[role]
        if i + 1 < len(roles):
            check = f"{name}Answered"
            states[name] = _task(function_arns[role], check, config if role in shared else None)
            states[check] = {
                "Type": "Choice",
                "Choices": [{"Variable": "$.status", "NumericGreaterThanEquals": 400, "Next": "Answered"}],
                "Default": STATE_NAMES[roles[i + 1]],
            }
        else:
            states[name] = _task(function_arns[role], "Answered", config if role in shared else None)
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
