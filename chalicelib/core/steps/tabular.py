"""The ``tabular`` pre step: records, rows or CSV to the model's float matrix."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    FLOAT_TYPES,
    DataType,
    Feature,
    Frozen,
    Records,
    Tensors,
    TensorSpec,
    Text,
    Value,
    dtype_name,
    is_fixed,
)
from chalicelib.core.steps.base import Params, Step, StepContext


class TabularParams(Params):
    features: tuple[Text, ...] | None = Field(
        default=None, description="feature names in the model's order; default: read from the model"
    )
    dtype: Literal["auto", "float32", "float64"] = Field(
        default="auto", description="tensor element type; auto: the model input's"
    )
    categories: dict[Text, dict[Text, float]] | None = Field(
        default=None,
        description="categorical features: {feature: {name: number}}; a request sends the names",
    )

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]] | None:
        for feature, mapping in (value or {}).items():
            if not mapping:
                raise ValueError(f"categories of {feature!r} must map at least one name to a number")
            for name, number in mapping.items():
                if not math.isfinite(number):
                    raise ValueError(f"categories.{feature}.{name} must be a finite number")
        return value


Kind = Literal["float", "int", "bool", "string"]
"""How a request spells one feature's values: a number, an integer, true/false, or text."""


def kind_of(datatype: DataType) -> Kind:
    if datatype in FLOAT_TYPES:
        return "float"
    if datatype == "BOOL":
        return "bool"
    return "string" if datatype == "BYTES" else "int"


class TabularColumn(Frozen):
    """One feature of a model that takes a tensor per column (a ColumnTransformer converted to ONNX)."""

    input: str
    dtype: str = Field(description="numpy's name of the input's element type ('bytes': text)")
    rank: int = Field(ge=1, le=2, description="[batch] or [batch, 1]")


class TabularArgs(Frozen):
    """What ``TabularRun`` is built from: one ``input`` matrix of ``dtype``, or (``columns``) one input
    per feature, each of its own type."""

    features: tuple[str, ...]
    input: str
    dtype: str = Field(description="numpy's name of the matrix's element type ('bytes': text)")
    categories: dict[str, dict[str, float]] | None = None
    rows: int | None = Field(
        default=None, description="the model takes exactly this many rows", exclude_if=lambda v: v is None
    )
    columns: tuple[TabularColumn, ...] | None = Field(
        default=None,
        description="one model input per feature, in the features' order",
        exclude_if=lambda v: v is None,
    )


class Tabular(Step):
    name = "tabular"
    stage = "pre"
    params_model = TabularParams
    summary = "records, rows or CSV -> the model's input matrix (or one input per column), typed per feature"
    params: TabularParams

    def _features(self, ctx: StepContext) -> tuple[str, ...]:
        if self.params.features is not None:
            names = self.params.features
        elif ctx.native.feature_names:
            names = ctx.native.feature_names
        elif ctx.native.n_features is not None:
            names = tuple(f"f{i}" for i in range(ctx.native.n_features))
        else:
            raise ProtocolError(
                "pre step tabular cannot tell the model's features",
                hint="list them in processing.pre: - tabular: {features: [...]}",
            )
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ProtocolError(f"pre step tabular: features repeat {', '.join(dupes)}")
        unknown = [c for c in self.params.categories or {} if c not in names]
        if unknown:
            raise ProtocolError(
                f"pre step tabular: categories name {', '.join(map(repr, unknown))}, which is not a "
                f"feature ({', '.join(names)})"
            )
        return names

    def _dtype(self, target: TensorSpec) -> DataType:
        if self.params.dtype != "auto":
            if target.datatype not in FLOAT_TYPES:
                raise ProtocolError(
                    f"pre step tabular: dtype {self.params.dtype} is a float but model input "
                    f"{target.name!r} expects {target.describe()}",
                    hint="leave dtype out: the model input's type is used",
                )
            return "FP32" if self.params.dtype == "float32" else "FP64"
        if target.datatype is None or target.datatype == "FP16":
            raise ProtocolError(
                f"pre step tabular produces a matrix of numbers, booleans or text but model input "
                f"{target.name!r} expects {target.describe()}"
            )
        return target.datatype

    def _targets(self, ctx: StepContext) -> tuple[TensorSpec, ...]:
        """The model's input: one matrix, or one ``[batch]`` / ``[batch, 1]`` tensor per feature (a
        ColumnTransformer converted to ONNX takes each column as its own input, of its own type)."""
        inputs = ctx.native.inputs
        if not isinstance(inputs, Tensors) or len(inputs.tensors) <= 1:
            return (ctx.single_input(self.name),)
        per_column = all(
            t.datatype is not None and (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] in (1, -1)))
            for t in inputs.tensors
        )
        if not per_column:
            shapes = ", ".join(f"{t.name}: {t.describe()}" for t in inputs.tensors)
            raise ProtocolError(
                f"pre step tabular makes one matrix, or one [batch, 1] tensor per feature, but the model "
                f"takes {shapes}",
                hint="remove the pre step and send every input tensor",
            )
        return inputs.tensors

    def _column_features(self, targets: tuple[TensorSpec, ...]) -> tuple[str, ...]:
        names = tuple(t.name for t in targets)
        if self.params.features is not None and sorted(self.params.features) != sorted(names):
            raise ProtocolError(
                f"pre step tabular: the model takes one input per feature ({', '.join(names)}), so the "
                f"features are those names; got {', '.join(self.params.features)}",
                hint="leave features out",
            )
        return self.params.features or names

    def _batch(self, target: TensorSpec) -> int | None:
        batch = target.shape[0] if target.shape else None
        return batch if isinstance(batch, int) and is_fixed(batch) and batch > 0 else None

    def public_input(self, ctx: StepContext) -> Value:
        targets = self._targets(ctx)
        categories = self.params.categories or {}
        if len(targets) == 1:
            if len(targets[0].shape) != 2 and targets[0].shape:
                raise ProtocolError(
                    f"pre step tabular makes a [batch, features] matrix but model input "
                    f"{targets[0].name!r} expects {targets[0].describe()}"
                )
            dtype = self._dtype(targets[0])
            names = self._features(ctx)
            types = {n: dtype for n in names}
        else:
            names = self._column_features(targets)
            by_name = {t.name: t for t in targets}
            types = {n: self._dtype(by_name[n]) for n in names}
        for feature in categories:
            if feature in types and types[feature] not in FLOAT_TYPES:
                raise ProtocolError(
                    f"pre step tabular: categories of {feature!r} map names to numbers, but the model "
                    f"takes it as {dtype_name(types[feature])}",
                    hint="send the value itself: leave its categories out",
                )
        return Records(
            rows=self._batch(targets[0]),
            features=tuple(
                Feature(
                    name=n, datatype=types[n], categories=tuple(categories[n]) if n in categories else None
                )
                for n in names
            ),
        )

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not isinstance(upstream, Records):
            raise self.refuse(upstream, "records")
        targets = self._targets(ctx)
        batch = upstream.rows or "batch"
        if len(targets) == 1:
            dtype = upstream.features[0].datatype if upstream.features else self._dtype(targets[0])
            return Tensors(
                tensors=(
                    TensorSpec(name=targets[0].name, datatype=dtype, shape=(batch, len(upstream.features))),
                )
            )
        return Tensors(
            tensors=tuple(
                TensorSpec(
                    name=t.name, datatype=t.datatype, shape=(batch, 1) if len(t.shape) == 2 else (batch,)
                )
                for t in targets
            )
        )

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> TabularArgs:
        assert isinstance(upstream, Records) and isinstance(produced, Tensors)
        target = produced.tensors[0]
        columns = None
        if len(produced.tensors) > 1:
            by_name = {t.name: t for t in produced.tensors}
            columns = tuple(
                TabularColumn(
                    input=f.name, dtype=dtype_name(by_name[f.name].datatype), rank=len(by_name[f.name].shape)
                )
                for f in upstream.features
            )
        return TabularArgs(
            features=tuple(f.name for f in upstream.features),
            input=target.name,
            dtype=dtype_name(target.datatype),
            categories=self.params.categories,
            rows=upstream.rows,
            columns=columns,
        )
