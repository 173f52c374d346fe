"""The runtime side of the processing steps: what each step does to real data.

The control plane knows a step by its protocol transform (``core/steps/<family>.py``), which also
resolves the step's run arguments - the feature order, the model input's name and dtype, which output
holds the class scores, a chart's title - into the model config file (``steps``). Here
each recorded step is looked up by name in ``RUNNERS`` (the run half, ``runtime/steps/<family>.py``) and
built from those arguments once at init, so a request only runs array code. Built-in pre steps raise
``RequestError`` for anything the client sent wrong; every other failure in a user step or a post step is
the model's (the handler answers 502 naming the step).

Each step is called as ``run(value, inv)``: ``inv`` is the request's ``StepCall``, where pre steps
leave what post steps may need of the request (the tabular rows, the decoded image and how it was fitted
to the model's input) - a line chart plots against a request feature, an overlay draws on the image.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.steps import BoundStep, UserStep
from chalicelib.core.steps.boxes import BoxesStep
from chalicelib.core.steps.charts import BarChart, Heatmap, LineChart, Scatter
from chalicelib.core.steps.image import ImageStep
from chalicelib.core.steps.overlay import Overlay
from chalicelib.core.steps.regression import Regression
from chalicelib.core.steps.scale import Scale
from chalicelib.core.steps.scores import LabelsStep, Softmax, Threshold, TopK
from chalicelib.core.steps.tabular import Tabular
from chalicelib.core.steps.text import TextStep
from chalicelib.runtime.loaders import ModelLoadError
from chalicelib.runtime.steps.base import FigureValue, Geometry, RunStep, StepCall, Table
from chalicelib.runtime.steps.boxes import BoxesRun
from chalicelib.runtime.steps.charts import BarChartRun, FeatureChartRun, HeatmapRun
from chalicelib.runtime.steps.image import ImageRun
from chalicelib.runtime.steps.overlay import OverlayRun
from chalicelib.runtime.steps.regression import RegressionRun
from chalicelib.runtime.steps.scale import ScaleRun
from chalicelib.runtime.steps.scores import LabelsRun, SoftmaxRun, ThresholdRun
from chalicelib.runtime.steps.tabular import TabularRun
from chalicelib.runtime.steps.text import TextRun
from chalicelib.runtime.steps.user import user_run

__all__ = ["RUNNERS", "FigureValue", "Geometry", "RunStep", "StepCall", "Table", "build_steps"]

RUNNERS: dict[str, Callable[[Mapping[str, Any]], Callable[..., Any]]] = {
    Tabular.name: TabularRun.from_args,
    ImageStep.name: ImageRun.from_args,
    TextStep.name: TextRun.from_args,
    Scale.name: ScaleRun.from_args,
    Softmax.name: SoftmaxRun.from_args,
    LabelsStep.name: LabelsRun.from_args,
    TopK.name: LabelsRun.from_args,
    Threshold.name: ThresholdRun.from_args,
    Regression.name: RegressionRun.from_args,
    BoxesStep.name: BoxesRun.from_args,
    BarChart.name: BarChartRun.from_args,
    LineChart.name: FeatureChartRun.from_args,
    Scatter.name: FeatureChartRun.from_args,
    Heatmap.name: HeatmapRun.from_args,
    Overlay.name: OverlayRun.from_args,
}
"""The run half of each built-in step, by its name, built from the arguments its protocol half resolved."""


def _run_step(bound: BoundStep, model_dir: Path) -> RunStep:
    """One recorded step built. Built-in pre steps' failures are the request's or the runtime's; a post
    step's or user code's are the model's (``contained``)."""
    try:
        if bound.step == UserStep.name:
            ref, user = user_run(bound.args, model_dir)
            return RunStep(f"{bound.stage}:{ref}", user, contained=True)
        runner = RUNNERS.get(bound.step)
        if runner is None:
            raise ModelLoadError(f"step {bound.step} has no runtime")
        return RunStep(f"{bound.stage}:{bound.step}", runner(bound.args), contained=bound.stage == "post")
    except ValidationError as exc:
        raise ModelLoadError(f"{bound.stage} step {bound.step}: the config file's arguments: {exc}") from None


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


def _recorded(manifest: ModelConfigFile) -> tuple[BoundStep, ...]:
    """The recorded steps, checked against ``processing`` (a file edited by hand, or older than the
    record, must not run a different chain than it declares)."""
    steps = manifest.steps
    declared = [
        (stage, UserStep.name if ref.is_user_code else ref.step)
        for stage, refs in (("pre", manifest.processing.pre), ("post", manifest.processing.post))
        for ref in refs
    ]
    if declared != [(b.stage, b.step) for b in steps]:
        raise ModelLoadError("the config file's recorded steps do not match its processing; regenerate it")
    return steps


def build_steps(
    manifest: ModelConfigFile, model_dir: Path, *, stages: Collection[str] = ("pre", "post")
) -> tuple[list[RunStep], list[RunStep]]:
    """Build the steps the config file records (``steps``, resolved by ``core/chain.py``) in
    chain order; only the steps of ``stages`` are built (a chained pipeline's pre function never imports
    matplotlib). The other list is empty."""
    steps = _recorded(manifest)
    pre = [_run_step(b, model_dir) for b in steps if b.stage == "pre" and "pre" in stages]
    post = [_run_step(b, model_dir) for b in steps if b.stage == "post" and "post" in stages]
    return timing_names(pre), timing_names(post)
