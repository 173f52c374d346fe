"""What an inspector reads from a model artifact: its native contract, before any processing step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chalicelib.core.protocol import Frozen, Json, Tensors

Framework = Literal["onnx", "sklearn", "xgboost", "lightgbm", "python"]
FRAMEWORKS: tuple[Framework, ...] = ("onnx", "sklearn", "xgboost", "lightgbm", "python")

Task = Literal["classifier", "regressor", "transformer", "pipeline", "ranker", "predictor", "unknown"]

Scalar = str | int | float | bool


class NativeContract(Frozen):
    """The model's own input/output contract as read from the artifact, without running user code."""

    framework: Framework
    task: Task = "unknown"
    model_type: str | None = Field(
        default=None, description="e.g. sklearn.linear_model.LogisticRegression or reg:squarederror"
    )
    inputs: Tensors | Json
    outputs: Tensors | Json
    feature_names: tuple[str, ...] | None = None
    classes: tuple[Scalar, ...] | None = None
    has_predict_proba: bool | None = None
    metadata: dict[str, str] = Field(
        default_factory=dict, description="framework facts: opset, producer, objective, ..."
    )

    @property
    def n_features(self) -> int | None:
        if self.feature_names is not None:
            return len(self.feature_names)
        if isinstance(self.inputs, Tensors) and len(self.inputs.tensors) == 1:
            shape = self.inputs.tensors[0].shape
            if len(shape) == 2 and isinstance(shape[1], int) and shape[1] >= 0:
                return shape[1]
        return None
