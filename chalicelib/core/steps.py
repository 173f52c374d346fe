"""The processing-step interface and the built-in steps' protocol transforms.

A step is known to the control plane by what it does to the *protocol*: which value it accepts, which it
produces, which parameters it takes and which packages its runtime needs. Running a step on real data is
the runtime's job (``chalicelib/runtime``); both sides share the parameter models defined here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chalicelib.core.errors import ProtocolError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import (
    FLOAT_TYPES,
    DataType,
    EncodedImage,
    Feature,
    Figure,
    Json,
    Labels,
    Records,
    Tensors,
    TensorSpec,
    Text,
    Value,
)

Stage = Literal["pre", "post"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StepContext:
    """What a step may know of the model it is chained to."""

    native: NativeContract
    labels: tuple[str, ...] | None  # from the config, else the model's classes

    def single_input(self, step: str) -> TensorSpec:
        inputs = self.native.inputs
        if not isinstance(inputs, Tensors):
            raise ProtocolError(
                f"pre step {step} produces tensors but the {self.native.framework} model takes "
                f"{inputs.describe()}"
            )
        if len(inputs.tensors) != 1:
            names = ", ".join(repr(t.name) for t in inputs.tensors)
            raise ProtocolError(
                f"pre step {step} produces one tensor but the model has {len(inputs.tensors)} "
                f"inputs ({names})",
                hint="remove the pre step and send every input tensor",
            )
        return inputs.tensors[0]


class Step(ABC):
    """A built-in processing step, bound to its parameters."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    params_model: ClassVar[type[Params]]
    packages: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str]

    def __init__(self, params: Params) -> None:
        self.params = params

    def public_input(self, ctx: StepContext) -> Value | None:
        """What a request must carry when this step comes first; ``None``: it cannot come first."""
        return None

    @abstractmethod
    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        """The value this step produces from ``upstream``; raises ProtocolError if it cannot take it."""

    def refuse(self, upstream: Value, wants: str) -> ProtocolError:
        return ProtocolError(
            f"{self.stage} step {self.name} takes {wants} but receives {upstream.describe()}"
        )


# --------------------------------------------------------------------------- pre steps


class TabularParams(Params):
    features: tuple[Text, ...] | None = Field(
        default=None, description="feature names in the model's order; default: read from the model"
    )
    dtype: Literal["auto", "float32", "float64"] = Field(
        default="auto", description="tensor element type; auto: the model input's"
    )


class Tabular(Step):
    name = "tabular"
    stage = "pre"
    params_model = TabularParams
    summary = "records, rows or CSV -> a float matrix in the model's feature order"
    params: TabularParams

    def _features(self, ctx: StepContext) -> tuple[str, ...]:
        if self.params.features is not None:
            return self.params.features
        if ctx.native.feature_names:
            return ctx.native.feature_names
        n = ctx.native.n_features
        if n is None:
            raise ProtocolError(
                "pre step tabular cannot tell the model's features",
                hint="list them in processing.pre: - tabular: {features: [...]}",
            )
        return tuple(f"f{i}" for i in range(n))

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
        dtype = self._dtype(ctx.single_input(self.name))
        return Records(features=tuple(Feature(name=n, datatype=dtype) for n in self._features(ctx)))

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not isinstance(upstream, Records):
            raise self.refuse(upstream, "records")
        target = ctx.single_input(self.name)
        return Tensors(
            tensors=(
                TensorSpec(
                    name=target.name,
                    datatype=self._dtype(target),
                    shape=("batch", len(upstream.features)),
                ),
            )
        )


class ImageParams(Params):
    size: tuple[int, int] = Field(description="[height, width] the model expects, in pixels")
    mode: Literal["RGB", "L"] = Field(default="RGB", description="RGB colour or L (grayscale)")
    layout: Literal["NCHW", "NHWC", "flat"] = Field(
        default="NCHW", description="tensor layout; flat: one row of height*width*channels values"
    )
    resize: Literal["stretch", "crop", "letterbox"] = "stretch"
    scale: float = Field(default=1 / 255, description="multiplies pixel values (0-255) first")
    mean: tuple[float, ...] | None = Field(default=None, description="per channel, subtracted")
    std: tuple[float, ...] | None = Field(default=None, description="per channel, divided by")
    invert: bool = Field(default=False, description="255 - pixel first (dark ink on white paper)")
    dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _check(self) -> ImageParams:
        if min(self.size) < 1 or max(self.size) > 8192:
            raise ValueError("size must be [height, width] between 1 and 8192")
        channels = 3 if self.mode == "RGB" else 1
        for key in ("mean", "std"):
            stats = getattr(self, key)
            if stats is not None and len(stats) != channels:
                raise ValueError(f"{key} needs {channels} value(s) for mode {self.mode}")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("std values must not be 0")
        return self


class Image(Step):
    name = "image"
    stage = "pre"
    params_model = ImageParams
    packages = ("pillow",)
    summary = "PNG/JPEG/WebP bytes -> decoded, resized, normalized tensor"
    params: ImageParams

    def public_input(self, ctx: StepContext) -> Value:
        height, width = self.params.size
        return EncodedImage(width=width, height=height)

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not isinstance(upstream, EncodedImage):
            raise self.refuse(upstream, "an image")
        target = ctx.single_input(self.name)
        p = self.params
        h, w = p.size
        c = 3 if p.mode == "RGB" else 1
        shape: tuple[int, ...] = {
            "NCHW": (1, c, h, w),
            "NHWC": (1, h, w, c),
            "flat": (1, h * w * c),
        }[p.layout]
        dtype: DataType = "FP32" if p.dtype == "float32" else "FP64"
        return Tensors(tensors=(TensorSpec(name=target.name, datatype=dtype, shape=shape),))


# --------------------------------------------------------------------------- post steps


def _scores_tensor(upstream: Value, step: str, output: str | None) -> TensorSpec:
    if not isinstance(upstream, Tensors):
        raise ProtocolError(f"post step {step} takes class scores but receives {upstream.describe()}")
    candidates = [
        t
        for t in upstream.tensors
        if t.datatype in FLOAT_TYPES and len(t.shape) in (1, 2) and (output is None or t.name == output)
    ]
    if output is not None and not candidates:
        names = ", ".join(repr(t.name) for t in upstream.tensors)
        raise ProtocolError(
            f"post step {step} reads output {output!r}, but the model's float outputs are: {names}"
        )
    if len(candidates) != 1:
        described = ", ".join(f"{t.name}: {t.describe()}" for t in upstream.tensors)
        raise ProtocolError(
            f"post step {step} needs one float [batch, classes] output of scores, model gives {described}",
            hint=f"choose one with - {step}: {{output: NAME}}",
        )
    return candidates[0]


def _labels_for(upstream: Value, ctx: StepContext, step: str, output: str | None) -> tuple[str, ...]:
    scores = _scores_tensor(upstream, step, output)
    labels = ctx.labels
    if labels is None:
        raise ProtocolError(
            f"post step {step} needs class labels: the model has no classes",
            hint="add labels: [...] to modelport.yaml",
        )
    n_classes = scores.shape[-1]
    if isinstance(n_classes, int) and n_classes >= 0 and n_classes != len(labels):
        raise ProtocolError(
            f"post step {step} has {len(labels)} labels but model output {scores.name!r} "
            f"gives {scores.describe()} ({n_classes} class scores)"
        )
    return labels


class LabelsParams(Params):
    top_k: int | None = Field(default=None, ge=1, description="keep the k best classes; default all")
    output: str | None = Field(default=None, description="the model output holding class scores")


class LabelsStep(Step):
    name = "labels"
    stage = "post"
    params_model = LabelsParams
    summary = "class scores -> [{label, score}] best first"
    params: LabelsParams

    def _top_k(self) -> int | None:
        return self.params.top_k

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        labels = _labels_for(upstream, ctx, self.name, self.params.output)
        k = self._top_k()
        return Labels(labels=labels, top_k=min(k, len(labels)) if k else len(labels))


class TopKParams(LabelsParams):
    top_k: int | None = Field(default=5, ge=1, description="keep the k best classes")


class TopK(LabelsStep):
    name = "top_k"
    params_model = TopKParams
    summary = "class scores -> the k best [{label, score}]"


class BarChartParams(Params):
    title: Text | None = Field(default=None, max_length=200)
    top_k: int | None = Field(default=None, ge=1, description="bars for the k best classes")
    output: str | None = Field(default=None, description="the model output holding class scores")


class BarChart(Step):
    name = "bar_chart"
    stage = "post"
    params_model = BarChartParams
    packages = ("matplotlib",)
    summary = "class probabilities -> a PNG bar chart (plus the labelled scores)"
    params: BarChartParams

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        data: Value = upstream
        if not isinstance(upstream, Labels):
            labels = _labels_for(upstream, ctx, self.name, self.params.output)
            k = self.params.top_k
            data = Labels(labels=labels, top_k=min(k, len(labels)) if k else len(labels))
        return Figure(chart=self.name, data=data)


BUILTIN_STEPS: dict[str, type[Step]] = {cls.name: cls for cls in (Tabular, Image, LabelsStep, TopK, BarChart)}


class UserStep(Step):
    """A user's ``path/file.py:function``; it runs only inside the model's container.

    Its types are not declared yet, so it is trusted to bridge its neighbours: as the first pre step it
    takes any JSON, elsewhere it hands on a value the next stage accepts.
    """

    name = "user"
    stage = "pre"
    params_model = Params
    summary = "user code"

    def __init__(self, ref: str, stage: Stage) -> None:
        super().__init__(Params())
        self.ref = ref
        self.stage_of = stage

    def public_input(self, ctx: StepContext) -> Value:
        return Json()

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        return Json()
