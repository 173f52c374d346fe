"""Visualization post steps that chart a result: ``bar_chart``, ``line_chart``, ``scatter``, ``heatmap``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    FLOAT_TYPES,
    INT_TYPES,
    Figure,
    Frozen,
    Json,
    Labels,
    Records,
    Tensors,
    TensorSpec,
    Text,
    Value,
    is_fixed,
)
from chalicelib.core.steps.base import Params, Step, StepContext, title_of
from chalicelib.core.steps.regression import is_regression, prediction_tensor
from chalicelib.core.steps.scores import LabelsArgs, labels_for, map_keys, scores_tensor

MATPLOTLIB = ("matplotlib", "pillow")
"""Charts drawn with matplotlib (Agg) and written as PNG with Pillow."""


class BarChartArgs(Frozen):
    """What ``BarChartRun`` is built from; ``scores``: how to label raw class scores first (none when
    the upstream gives labels already)."""

    title: str
    names: tuple[str, ...]
    bars: int
    scores: LabelsArgs | None


class FeatureChartArgs(Frozen):
    """What ``FeatureChartRun`` is built from; ``output`` None: the upstream is a regression result."""

    kind: Literal["line_chart", "scatter"]
    title: str
    feature: str
    y_label: str
    output: str | None


class HeatmapArgs(Frozen):
    """What ``HeatmapRun`` is built from."""

    title: str
    output: str
    labels: tuple[str, ...] | None
    shape: tuple[int, int] | None
    x_label: str | None
    y_label: str | None
    vmin: float | None
    vmax: float | None
    colormap: str
    values: bool


class ChartParams(Params):
    title: Text | None = Field(default=None, max_length=200, description="default: the model's name")


class BarChartParams(ChartParams):
    top_k: int | None = Field(default=None, ge=1, description="bars for the k best classes")
    output: str | None = Field(default=None, description="the model output holding class scores")


class BarChart(Step):
    name = "bar_chart"
    stage = "post"
    params_model = BarChartParams
    packages = MATPLOTLIB
    summary = "class probabilities -> a PNG bar chart (plus the labelled scores)"
    params: BarChartParams

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        data: Value = upstream
        if not isinstance(upstream, Labels):
            labels = labels_for(upstream, ctx, self.name, self.params.output)
            k = self.params.top_k
            data = Labels(labels=labels, top_k=min(k, len(labels)) if k else len(labels))
        return Figure(chart=self.name, data=data)

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> BarChartArgs:
        assert isinstance(produced, Figure) and isinstance(produced.data, Labels)
        data = produced.data  # the upstream labels, or the ones the chart computes from scores
        scores = None
        if not isinstance(upstream, Labels):
            tensor = scores_tensor(upstream, self.name, self.params.output)
            keys = map_keys(upstream, tensor.name)
            scores = LabelsArgs(scores=tensor.name, labels=data.labels, top_k=data.top_k, keys=keys)
        bars = min(self.params.top_k or data.top_k, data.top_k)
        return BarChartArgs(title=title_of(self.params, ctx), names=data.labels, bars=bars, scores=scores)


class FeatureChartParams(ChartParams):
    feature: Text = Field(description="the request's feature on the x axis")
    output: str | None = Field(default=None, description="the model output holding the predictions")
    y_label: Text | None = Field(default=None, max_length=80, description="default: prediction (unit)")


class LineChart(Step):
    """A regression's predictions against one input feature, across the rows of a batch."""

    name = "line_chart"
    stage = "post"
    params_model = FeatureChartParams
    packages = MATPLOTLIB
    summary = "predictions against an input feature across a batch -> a PNG line chart (plus the values)"
    params: FeatureChartParams

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not is_regression(upstream):
            prediction_tensor(upstream, self.name, self.params.output)
        request = ctx.request
        feature = self.params.feature
        if not isinstance(request, Records):
            raise ProtocolError(
                f"post step {self.name} plots against the request's feature {feature!r}, which needs "
                f"tabular records (the request is {request.describe() if request else 'unknown'})",
                hint="put - tabular first under processing.pre",
            )
        names = [f.name for f in request.features]
        if feature not in names:
            raise ProtocolError(
                f"post step {self.name}: {feature!r} is not a feature of the request ({', '.join(names)})"
            )
        return Figure(chart=self.name, data=upstream)

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> FeatureChartArgs:
        p = self.params
        if is_regression(upstream):
            assert isinstance(upstream, Json)
            output = None
            unit = upstream.json_schema["items"]["properties"].get("unit", {}).get("const")
        else:
            output = prediction_tensor(upstream, self.name, p.output).name
            unit = None
        y_label = p.y_label or ("prediction" + (f" ({unit})" if unit else ""))
        kind: Literal["line_chart", "scatter"] = "scatter" if self.name == "scatter" else "line_chart"
        title = title_of(p, ctx)
        return FeatureChartArgs(kind=kind, title=title, feature=p.feature, y_label=y_label, output=output)


class Scatter(LineChart):
    name = "scatter"
    summary = "predictions against an input feature across a batch -> a PNG scatter plot (plus the values)"


class HeatmapParams(ChartParams):
    output: str | None = Field(default=None, description="the model output to draw (2-D after its batch)")
    shape: tuple[int, int] | None = Field(
        default=None, description="[rows, columns] to view a flat output as a grid"
    )
    x_label: Text | None = Field(default=None, max_length=80)
    y_label: Text | None = Field(default=None, max_length=80)
    vmin: float | None = Field(default=None, description="colour scale bottom; default 0, or the minimum")
    vmax: float | None = Field(default=None, description="colour scale top; default 1, or the maximum")
    colormap: Literal["viridis", "magma", "cividis", "gray", "Blues"] = "viridis"
    values: bool = Field(default=True, description="write each value in its cell (grids up to 12x12)")

    @model_validator(mode="after")
    def _check(self) -> HeatmapParams:
        if self.shape is not None and min(self.shape) < 1:
            raise ValueError("shape must be [rows, columns] of at least 1")
        if self.vmin is not None and self.vmax is not None and self.vmin >= self.vmax:
            raise ValueError("vmin must be less than vmax")
        return self


class Heatmap(Step):
    name = "heatmap"
    stage = "post"
    params_model = HeatmapParams
    packages = MATPLOTLIB
    summary = "a 2-D output (mask, probability grid) -> a PNG heat map (plus the tensors)"
    params: HeatmapParams

    def target(self, upstream: Value) -> TensorSpec:
        if not isinstance(upstream, Tensors):
            raise self.refuse(upstream, "model output tensors")
        numeric = (*FLOAT_TYPES, *INT_TYPES, "BOOL")
        output = self.params.output
        need = 1 if self.params.shape else 2
        candidates = [
            t
            for t in upstream.tensors
            if t.datatype in numeric and len(t.shape) >= need and (output is None or t.name == output)
        ]
        if len(candidates) != 1:
            described = ", ".join(f"{t.name}: {t.describe()}" for t in upstream.tensors)
            what = f"{output!r}, a numeric output" if output else "one numeric output"
            raise ProtocolError(
                f"post step heatmap draws {what} of rank {need} or more; model gives {described}",
                hint="choose one with - heatmap: {output: NAME}",
            )
        tensor = candidates[0]
        if self.params.shape is not None:
            rows, cols = self.params.shape
            size = tensor.shape[-1]
            if is_fixed(size) and size != rows * cols:
                raise ProtocolError(
                    f"post step heatmap: shape [{rows}, {cols}] holds {rows * cols} values but "
                    f"{tensor.name!r} gives {tensor.describe()}"
                )
        return tensor

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.target(upstream)
        return Figure(chart=self.name, data=upstream)

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> HeatmapArgs:
        p = self.params
        return HeatmapArgs(
            title=title_of(p, ctx),
            output=self.target(upstream).name,
            labels=ctx.labels,
            shape=p.shape,
            x_label=p.x_label,
            y_label=p.y_label,
            vmin=p.vmin,
            vmax=p.vmax,
            colormap=p.colormap,
            values=p.values,
        )
