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


class TabularArgs(Frozen):
    """What ``TabularRun`` is built from."""

    features: tuple[str, ...]
    input: str
    dtype: Literal["float32", "float64"]
    categories: dict[str, dict[str, float]] | None = None
    rows: int | None = Field(
        default=None, description="the model takes exactly this many rows", exclude_if=lambda v: v is None
    )


class Tabular(Step):
    name = "tabular"
    stage = "pre"
    params_model = TabularParams
    summary = "records, rows or CSV -> a float matrix in the model's feature order"
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
            return "FP32" if self.params.dtype == "float32" else "FP64"
        if target.datatype not in FLOAT_TYPES:
            raise ProtocolError(
                f"pre step tabular produces a float matrix but model input {target.name!r} "
                f"expects {target.describe()}"
            )
        return target.datatype

    def public_input(self, ctx: StepContext) -> Value:
        target = ctx.single_input(self.name)
        dtype = self._dtype(target)
        categories = self.params.categories or {}
        batch = target.shape[0] if len(target.shape) == 2 else None
        return Records(
            rows=batch if isinstance(batch, int) and is_fixed(batch) and batch > 0 else None,
            features=tuple(
                Feature(
                    name=n,
                    datatype=dtype,
                    categories=tuple(categories[n]) if n in categories else None,
                )
                for n in self._features(ctx)
            ),
        )

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not isinstance(upstream, Records):
            raise self.refuse(upstream, "records")
        target = ctx.single_input(self.name)
        return Tensors(
            tensors=(
                TensorSpec(
                    name=target.name,
                    datatype=self._dtype(target),
                    shape=(upstream.rows or "batch", len(upstream.features)),
                ),
            )
        )

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> TabularArgs:
        assert isinstance(upstream, Records) and isinstance(produced, Tensors)
        target = produced.tensors[0]
        return TabularArgs(
            features=tuple(f.name for f in upstream.features),
            input=target.name,
            dtype="float32" if target.datatype == "FP32" else "float64",
            categories=self.params.categories,
            rows=upstream.rows,
        )
