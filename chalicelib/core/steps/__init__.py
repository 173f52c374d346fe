"""The processing steps as the control plane knows them: one module per family, and the registry.

``base`` holds the interface (parameters, the step, its context, user steps' types); each family module
holds its steps' parameters and protocol transforms, beside the run half of the same name in
``chalicelib/runtime/steps``. ``BUILTIN_STEPS`` maps a step's name (as written in ``modelport.yaml``) to
its class.
"""

from __future__ import annotations

from chalicelib.core.steps.base import BoundStep, Params, Stage, Step, StepContext, UserSignature, UserType
from chalicelib.core.steps.boxes import BoxesStep
from chalicelib.core.steps.charts import BarChart, Heatmap, LineChart, Scatter
from chalicelib.core.steps.image import ImageStep
from chalicelib.core.steps.overlay import Overlay
from chalicelib.core.steps.regression import Regression
from chalicelib.core.steps.scale import Scale
from chalicelib.core.steps.scores import LabelsStep, Softmax, Threshold, TopK
from chalicelib.core.steps.tabular import Tabular
from chalicelib.core.steps.text import TextStep
from chalicelib.core.steps.user import UserStep

__all__ = [
    "BUILTIN_STEPS",
    "BoundStep",
    "Params",
    "Stage",
    "Step",
    "StepContext",
    "UserSignature",
    "UserStep",
    "UserType",
]

BUILTIN_STEPS: dict[str, type[Step]] = {
    cls.name: cls
    for cls in (
        Tabular,
        ImageStep,
        TextStep,
        Scale,
        Softmax,
        LabelsStep,
        TopK,
        Threshold,
        Regression,
        BoxesStep,
        BarChart,
        LineChart,
        Scatter,
        Heatmap,
        Overlay,
    )
}
