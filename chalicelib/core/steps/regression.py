"""The ``regression`` post step: one prediction per row, rounded and with its unit."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    Frozen,
    Json,
    TensorSpec,
    Text,
    Value,
    is_fixed,
)
from chalicelib.core.steps.base import Params, Step, StepContext
from chalicelib.core.steps.scores import float_output

REGRESSION = "regression"
"""The JSON Schema ``title`` marking a regression step's result."""


def regression_schema(unit: str | None) -> dict[str, Any]:
    props: dict[str, Any] = {"prediction": {"type": "number"}}
    if unit is not None:
        props["unit"] = {"type": "string", "const": unit}
    item = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    return {"type": "array", "title": REGRESSION, "items": item, "description": "one per request row"}


def is_regression(value: Value) -> bool:
    return isinstance(value, Json) and value.json_schema.get("title") == REGRESSION


class RegressionArgs(Frozen):
    """What ``RegressionRun`` is built from."""

    output: str
    decimals: int | None
    unit: str | None


class RegressionParams(Params):
    decimals: int | None = Field(default=None, ge=0, le=12, description="round to this many decimals")
    unit: Text | None = Field(default=None, max_length=40, description="the unit, e.g. 'mg/dL'")
    output: str | None = Field(default=None, description="the model output holding the predictions")


class Regression(Step):
    name = "regression"
    stage = "post"
    params_model = RegressionParams
    summary = "a [batch] or [batch, 1] prediction -> [{prediction, unit}] per row, rounded"
    params: RegressionParams

    def target(self, upstream: Value) -> TensorSpec:
        return prediction_tensor(upstream, self.name, self.params.output)

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.target(upstream)
        return Json(json_schema=regression_schema(self.params.unit))

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> RegressionArgs:
        return RegressionArgs(
            output=self.target(upstream).name, decimals=self.params.decimals, unit=self.params.unit
        )


def prediction_tensor(upstream: Value, step: str, output: str | None) -> TensorSpec:
    tensor = float_output(upstream, step, output, (1, 2), "predictions", "[batch] or [batch, 1]")
    if len(tensor.shape) == 2 and is_fixed(tensor.shape[1]) and tensor.shape[1] != 1:
        raise ProtocolError(
            f"post step {step} takes one prediction per row but output {tensor.name!r} gives "
            f"{tensor.describe()}"
        )
    return tensor
