"""The ``scale`` pre step: per-feature standardization of a float tensor."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    FLOAT_TYPES,
    Frozen,
    Tensors,
    Value,
    is_fixed,
)
from chalicelib.core.steps.base import Params, Step, StepContext


class ScaleParams(Params):
    mean: tuple[float, ...] = Field(description="per feature (the last axis), subtracted")
    std: tuple[float, ...] = Field(description="per feature, divided by; every value > 0")

    @model_validator(mode="after")
    def _check(self) -> ScaleParams:
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std need one value per feature ({len(self.mean)} and {len(self.std)})"
            )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ValueError("mean and std must be finite numbers")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be greater than 0")
        return self


class ScaleArgs(Frozen):
    """What ``ScaleRun`` is built from."""

    input: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Scale(Step):
    name = "scale"
    stage = "pre"
    params_model = ScaleParams
    summary = "standardize a float tensor per feature: (x - mean) / std"
    params: ScaleParams

    def public_input(self, ctx: StepContext) -> Value:
        return Tensors(tensors=(ctx.single_input(self.name),))

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not isinstance(upstream, Tensors) or len(upstream.tensors) != 1:
            raise self.refuse(upstream, "one float tensor")
        (tensor,) = upstream.tensors
        if tensor.datatype not in FLOAT_TYPES or not tensor.shape:
            raise self.refuse(upstream, "one float tensor")
        width = tensor.shape[-1]
        if is_fixed(width) and width != len(self.params.mean):
            raise ProtocolError(
                f"pre step scale has {len(self.params.mean)} mean/std values but receives "
                f"{tensor.describe()} ({width} features)"
            )
        return upstream

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> ScaleArgs:
        assert isinstance(upstream, Tensors)
        return ScaleArgs(input=upstream.tensors[0].name, mean=self.params.mean, std=self.params.std)
