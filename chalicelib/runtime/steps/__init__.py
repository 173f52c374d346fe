"""The runtime side of the processing steps: what each step does to real data.

The control plane knows a step by its protocol transform (``core/steps.py``); here the same chain is
replayed once at init (``build_steps``) to learn each step's concrete arguments - the feature order, the
model input's name and dtype, which output holds the class scores - so a request only runs array code.
Built-in pre steps raise ``RequestError`` for anything the client sent wrong; every other failure in a
user step or a post step is the model's (the handler answers 502 naming the step).

Each step is called as ``run(value, inv)``: ``inv`` is the request's ``StepCall``, where pre steps
leave what post steps may need of the request (the tabular rows, the decoded image and how it was fitted
to the model's input) - a line chart plots against a request feature, an overlay draws on the image.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.core.config import StepRef
from chalicelib.core.manifest import ModelConfigFile
from chalicelib.core.protocol import Boxes, EncodedImage, Figure, Json, Labels, Records, Tensors, Value
from chalicelib.core.steps import Step, StepContext, UserStep
from chalicelib.core.steps.boxes import BoxesStep
from chalicelib.core.steps.charts import BarChart, Heatmap, LineChart
from chalicelib.core.steps.image import ImageStep
from chalicelib.core.steps.overlay import Overlay
from chalicelib.core.steps.regression import Regression, is_regression, prediction_tensor
from chalicelib.core.steps.scale import Scale
from chalicelib.core.steps.scores import LabelsStep, Softmax, Threshold, scores_tensor
from chalicelib.core.steps.tabular import Tabular
from chalicelib.core.steps.text import TextStep
from chalicelib.runtime.loaders import ModelLoadError
from chalicelib.runtime.steps.base import FigureValue, Geometry, RunStep, StepCall, Table
from chalicelib.runtime.steps.boxes import BoxesRun
from chalicelib.runtime.steps.charts import BarChartRun, FeatureChartRun, HeatmapRun
from chalicelib.runtime.steps.image import ImageRun
from chalicelib.runtime.steps.overlay import OverlayRun
from chalicelib.runtime.steps.regression import RegressionRun, predictions_of
from chalicelib.runtime.steps.scale import ScaleRun
from chalicelib.runtime.steps.scores import LabelsRun, SoftmaxRun, ThresholdRun
from chalicelib.runtime.steps.tabular import TabularRun
from chalicelib.runtime.steps.text import TextRun
from chalicelib.runtime.steps.user import UserRun, user_function

__all__ = ["FigureValue", "Geometry", "RunStep", "StepCall", "Table", "build_steps"]


def _bind(
    step: Step, ref: StepRef, upstream: Value, ctx: StepContext, manifest: ModelConfigFile, model_dir: Path
) -> RunStep:
    if isinstance(step, UserStep):
        sig = step.signature(ctx)
        produced = step.apply(upstream, ctx)
        names = tuple(t.name for t in produced.tensors) if isinstance(produced, Tensors) else ()
        fn = user_function(model_dir, ref.step)
        run = UserRun(fn, upstream, sig.accepts, sig.returns, names)
        return RunStep(f"{step.stage_of}:{ref.step}", run, contained=True)
    produced = step.apply(upstream, ctx)
    stage = f"{step.stage}:{step.name}"
    title = getattr(step.params, "title", None) or manifest.name
    if isinstance(step, Tabular):
        assert isinstance(upstream, Records) and isinstance(produced, Tensors)
        target = produced.tensors[0]
        dtype = np.float32 if target.datatype == "FP32" else np.float64
        features = tuple(f.name for f in upstream.features)
        tabular = TabularRun(features, target.name, dtype, step.params.categories)
        return RunStep(stage, tabular, contained=False)
    if isinstance(step, ImageStep):
        assert isinstance(upstream, EncodedImage) and isinstance(produced, Tensors)
        return RunStep(
            stage, ImageRun(step.params, produced.tensors[0].name, upstream.formats), contained=False
        )
    if isinstance(step, TextStep):
        assert isinstance(upstream, Json)
        field, _ = step._field(upstream)
        low, high = step.limits(ctx, field)
        return RunStep(stage, TextRun(step, field, low, high), contained=False)
    if isinstance(step, Scale):
        assert isinstance(upstream, Tensors)
        scale = ScaleRun(upstream.tensors[0].name, step.params.mean, step.params.std)
        return RunStep(stage, scale, contained=False)
    if isinstance(step, Softmax):
        return RunStep(stage, SoftmaxRun(step.target(upstream).name, step.params.temperature), contained=True)
    if isinstance(step, Threshold):
        assert isinstance(produced, Labels)
        threshold = ThresholdRun(step.scores(upstream).name, produced.labels, step.params.threshold)
        return RunStep(stage, threshold, contained=True)
    if isinstance(step, Regression):
        name = step.target(upstream).name
        return RunStep(stage, RegressionRun(name, step.params.decimals, step.params.unit), contained=True)
    if isinstance(step, BoxesStep):
        assert isinstance(produced, Boxes)
        return RunStep(
            stage, BoxesRun(step.plan(upstream, ctx), step.params, produced.labels), contained=True
        )
    if isinstance(step, BarChart):
        assert isinstance(produced, Figure) and isinstance(produced.data, Labels)
        data = produced.data  # the upstream labels, or the ones the chart computes from scores
        labels = None
        if not isinstance(upstream, Labels):
            scores = scores_tensor(upstream, step.name, step.params.output)
            labels = LabelsRun(scores.name, data.labels, data.top_k)
        bars = min(step.params.top_k or data.top_k, data.top_k)
        bar_chart = BarChartRun(title, data.labels, bars, labels)
        return RunStep(stage, bar_chart, contained=True)
    if isinstance(step, LineChart):  # and Scatter
        p = step.params
        if is_regression(upstream):
            assert isinstance(upstream, Json)
            output = None
            unit = upstream.json_schema["items"]["properties"].get("unit", {}).get("const")
        else:
            output = prediction_tensor(upstream, step.name, p.output).name
            unit = None
        y_label = p.y_label or ("prediction" + (f" ({unit})" if unit else ""))

        def prediction(value: Any, name: str | None = output) -> npt.NDArray[np.float64]:
            return predictions_of(value, name)

        chart = FeatureChartRun(step.name, title, p.feature, y_label, prediction)
        return RunStep(stage, chart, contained=True)
    if isinstance(step, Heatmap):
        hp = step.params
        heatmap = HeatmapRun(
            title, step.target(upstream).name, ctx.labels, hp.shape, hp.x_label, hp.y_label, hp.vmin,
            hp.vmax, hp.colormap, hp.values,
        )  # fmt: skip
        return RunStep(stage, heatmap, contained=True)
    if isinstance(step, Overlay):
        assert isinstance(upstream, Boxes)
        op = step.params
        overlay = OverlayRun(
            title, upstream.labels, op.max_size, op.min_size, op.line_width, op.font_size, op.scores
        )
        return RunStep(stage, overlay, contained=True)
    if isinstance(step, LabelsStep):
        assert isinstance(produced, Labels)
        scores = scores_tensor(upstream, step.name, step.params.output)
        return RunStep(stage, LabelsRun(scores.name, produced.labels, produced.top_k), contained=True)
    raise ModelLoadError(f"step {step.name} has no runtime")  # pragma: no cover - every built-in has one


_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~-]+")


def timing_names(steps: list[RunStep]) -> list[RunStep]:
    """Give each step its timing key: ``pre.tabular``, ``post.bar_chart``, ``pre.steps-clean.py-clean``
    (characters outside an HTTP token become ``-``); a repeated name gets ``-2``, ``-3``, ..."""
    seen: dict[str, int] = {}
    named = []
    for step in steps:
        stage, _, name = step.stage.partition(":")
        base = f"{stage}.{_TOKEN.sub('-', name).strip('-') or 'step'}"
        seen[base] = seen.get(base, 0) + 1
        key = base if seen[base] == 1 else f"{base}-{seen[base]}"
        named.append(replace(step, timing=key))
    return named


def build_steps(
    manifest: ModelConfigFile, model_dir: Path, *, stages: Collection[str] = ("pre", "post")
) -> tuple[list[RunStep], list[RunStep]]:
    """Replay the manifest's chain (as ``core/chain.py`` resolved it) and bind each step's arguments;
    only the steps of ``stages`` are bound (a chained pipeline's pre function never imports matplotlib).
    The other list is empty."""
    native = manifest.native
    labels = manifest.labels
    if labels is None and native.classes is not None:
        labels = tuple(str(c) for c in native.classes)
    user_types = {s.ref: s for s in manifest.protocol.user_steps}
    ctx = StepContext(native=native, labels=labels, user_types=user_types)
    pre: list[RunStep] = []
    value: Value = manifest.protocol.request_value
    for ref in manifest.processing.pre if "pre" in stages else ():
        step = ref.bind("pre")
        pre.append(_bind(step, ref, value, ctx, manifest, model_dir))
        value = step.apply(value, ctx)
    post: list[RunStep] = []
    ctx = replace(ctx, request=manifest.protocol.request_value)
    value = native.outputs
    for ref in manifest.processing.post if "post" in stages else ():
        step = ref.bind("post")
        post.append(_bind(step, ref, value, ctx, manifest, model_dir))
        value = step.apply(value, ctx)
    return timing_names(pre), timing_names(post)
