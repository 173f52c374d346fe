"""Protocol determination: the model's native contract, shaped by the pre and post steps.

The public request is what the first pre step accepts (or the model's own input), the public response is
what the last post step produces (or the model's own output). Every hand-over between neighbours is
checked here, at config time, so an impossible chain never reaches a build; and each step resolves its
run arguments here (``BoundStep``), so the runtime builds its steps from the config file without
replaying the chain.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

from chalicelib.core.config import ModelConfig, StepRef
from chalicelib.core.errors import ProtocolError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import (
    Frozen,
    Json,
    OipTensor,
    Tensors,
    Value,
    Wire,
    dims_fit,
    oip_tensors,
    request_wire,
    response_wire,
    value_fits,
)
from chalicelib.core.steps import BoundStep, Stage, Step, StepContext, UserSignature, UserStep


class StageSignature(Frozen):
    """One link of the chain, for people reading the config file."""

    stage: str
    step: str
    accepts: str
    produces: str


class OipMetadata(Frozen):
    """Open Inference Protocol v2 model metadata (``GET /v2/models/{name}``)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[OipTensor]
    outputs: list[OipTensor]


class Protocol(Frozen):
    """The resolved data transmission protocol of a model."""

    request_value: Value = Field(description="what a request carries")
    response_value: Value = Field(description="what a response carries")
    request: Wire
    response: Wire
    chain: tuple[StageSignature, ...]
    oip: OipMetadata
    user_steps: tuple[UserSignature, ...] = Field(
        default=(),
        description="the types of the user steps, read from their annotations",
        exclude_if=lambda steps: not steps,
    )


PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "sklearn": "sklearn_skops",
    "xgboost": "xgboost_json",
    "lightgbm": "lightgbm_text",
    "python": "python_predictor",
}


def _labels(config: ModelConfig, native: NativeContract) -> tuple[str, ...] | None:
    if config.labels is not None:
        return config.labels
    if native.classes is not None:
        return tuple(str(c) for c in native.classes)
    return None


def _steps_of(refs: tuple[StepRef, ...], stage: str) -> list[Step]:
    return [ref.bind("pre" if stage == "pre" else "post") for ref in refs]


def _bound(stage: Stage, step: Step, upstream: Value, produced: Value, ctx: StepContext) -> BoundStep:
    args = step.run_args(upstream, produced, ctx).model_dump(mode="json")
    return BoundStep(stage=stage, step=step.name, args=args)


def resolve_protocol(
    config: ModelConfig,
    native: NativeContract,
    *,
    version: int,
    user_steps: tuple[UserSignature, ...] = (),
) -> Protocol:
    """The protocol of ``config``'s chain around ``native`` (``resolve_chain`` without the steps)."""
    return resolve_chain(config, native, version=version, user_steps=user_steps)[0]


def resolve_chain(
    config: ModelConfig,
    native: NativeContract,
    *,
    version: int,
    user_steps: tuple[UserSignature, ...] = (),
) -> tuple[Protocol, tuple[BoundStep, ...]]:
    """The protocol of ``config``'s chain around ``native``, and each step with its run arguments in
    chain order (``BoundStep``); ``user_steps`` are the user steps' types
    (``chalicelib.inspect.steps.inspect_user_steps``): a user step without them is untyped."""
    labels = _labels(config, native)
    if labels is not None and native.classes is not None and len(labels) != len(native.classes):
        raise ProtocolError(
            f"labels has {len(labels)} names but the model has {len(native.classes)} classes "
            f"({', '.join(map(str, native.classes))})"
        )
    refs = {ref.step for ref in (*config.processing.pre, *config.processing.post) if ref.is_user_code}
    typed = tuple(sorted((s for s in user_steps if s.ref in refs), key=lambda s: s.ref))
    ctx = StepContext(native=native, labels=labels, user_types={s.ref: s for s in typed}, model=config.name)
    chain: list[StageSignature] = []
    bound: list[BoundStep] = []

    pre = _steps_of(config.processing.pre, "pre")
    model_in: Value = native.inputs
    if pre:
        first = pre[0].public_input(ctx)
        if first is None:
            raise ProtocolError(f"pre step {pre[0].name} cannot come first: it needs an upstream step")
        value: Value = first
        request_value = first
        for step in pre:
            produced = step.apply(value, ctx)
            chain.append(_sig("pre", step, value, produced))
            bound.append(_bound("pre", step, value, produced, ctx))
            value = produced
        untyped = isinstance(pre[-1], UserStep) and value == Json()  # checked by the runtime
        if not untyped and not value_fits(value, model_in):
            raise ProtocolError(_mismatch(pre[-1], value, model_in))
    else:
        request_value = model_in

    ctx = replace(ctx, request=request_value)
    value = native.outputs
    for step in _steps_of(config.processing.post, "post"):
        produced = step.apply(value, ctx)
        chain.append(_sig("post", step, value, produced))
        bound.append(_bound("post", step, value, produced, ctx))
        value = produced
    response_value = value

    try:
        request, response = request_wire(request_value), response_wire(response_value)
    except TypeError as exc:
        raise ProtocolError(str(exc)) from None
    oip = OipMetadata(
        name=config.name,
        versions=[str(version)],
        platform=PLATFORMS[native.framework],
        inputs=oip_tensors(request_value, role="input"),
        outputs=oip_tensors(response_value, role="output"),
    )
    protocol = Protocol(
        request_value=request_value,
        response_value=response_value,
        request=request,
        response=response,
        chain=tuple(chain),
        oip=oip,
        user_steps=typed,
    )
    return protocol, tuple(bound)


def _sig(stage: str, step: Step, accepts: Value, produces: Value) -> StageSignature:
    name = step.ref if isinstance(step, UserStep) else step.name
    return StageSignature(stage=stage, step=name, accepts=accepts.describe(), produces=produces.describe())


def _mismatch(step: Step, produced: Value, expected: Value) -> str:
    name = step.ref if isinstance(step, UserStep) else step.name
    if (
        isinstance(produced, Tensors)
        and isinstance(expected, Tensors)
        and len(produced.tensors) == len(expected.tensors) == 1
    ):
        want, got = expected.tensors[0], produced.tensors[0]
        axis = next(
            (i for i, (p, e) in enumerate(zip(got.shape, want.shape, strict=False)) if not dims_fit(p, e)),
            None,
        )
        where = ""
        if axis is not None and got.datatype == want.datatype and len(got.shape) == len(want.shape):
            what = " (the batch)" if axis == 0 else ""
            where = f": dimension {axis}{what} is {got.shape[axis]}, the model takes {want.shape[axis]}"
        return (
            f"pre step {name} produces {produced.describe()} but model input "
            f"{want.name!r} expects {want.describe()}{where}"
        )
    return f"pre step {name} produces {produced.describe()} but the model expects {expected.describe()}"
