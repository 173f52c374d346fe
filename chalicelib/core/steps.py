"""The processing-step interface and the built-in steps' protocol transforms.

A step is known to the control plane by what it does to the *protocol*: which value it accepts, which it
produces, which parameters it takes and which packages its runtime needs. Running a step on real data is
the runtime's job (``chalicelib/runtime``); both sides share the parameter models defined here.

Stages: ``pre`` steps go from the request to the model, ``post`` steps from the model to the response.
Visualization steps are post steps that produce a ``Figure`` (a PNG travelling with the structured value
it pictures); nothing can follow them.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chalicelib.core.errors import ProtocolError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import (
    FLOAT_TYPES,
    INT_TYPES,
    Boxes,
    DataType,
    EncodedImage,
    Feature,
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
    response_wire,
    schema_fits,
)

Stage = Literal["pre", "post"]
MATPLOTLIB = ("matplotlib", "pillow")
"""Charts drawn with matplotlib (Agg) and written as PNG with Pillow."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- user steps' types


class UserType(Frozen):
    """What a user step's parameter or return annotation says it takes or gives.

    ``json``: JSON data matching ``json_schema``; ``tensors``: ``dict[str, np.ndarray]`` named like the
    model's inputs (pre) or outputs (post); ``tensor``: one ``np.ndarray`` (a one-tensor neighbour)."""

    kind: Literal["json", "tensor", "tensors"]
    json_schema: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "json":
            return Json(json_schema=self.json_schema).describe()
        return "one ndarray" if self.kind == "tensor" else "dict[str, ndarray]"


class UserSignature(Frozen):
    """A user step's types, read from its annotations at config time (``chalicelib/inspect/steps.py``).
    ``None`` on either side: not annotated, so that side bridges its neighbour (see ``UserStep``)."""

    ref: str
    accepts: UserType | None
    returns: UserType | None


@dataclass(frozen=True)
class StepContext:
    """What a step may know of the model it is chained to."""

    native: NativeContract
    labels: tuple[str, ...] | None  # from the config, else the model's classes
    user_types: Mapping[str, UserSignature] = field(default_factory=dict)
    request: Value | None = None  # the public request; known to post steps

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
        hint = None
        if isinstance(upstream, Figure):
            hint = f"{upstream.chart} draws a picture: a visualization step must be the last post step"
        return ProtocolError(
            f"{self.stage} step {self.name} takes {wants} but receives {upstream.describe()}", hint=hint
        )


# --------------------------------------------------------------------------- pre steps


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
        dtype = self._dtype(ctx.single_input(self.name))
        categories = self.params.categories or {}
        return Records(
            features=tuple(
                Feature(
                    name=n,
                    datatype=dtype,
                    categories=tuple(categories[n]) if n in categories else None,
                )
                for n in self._features(ctx)
            )
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


class TextParams(Params):
    field: Text | None = Field(
        default=None, description="the string property to clean; default: the input's only string"
    )
    normalize: Literal["NFC", "NFKC", "none"] = Field(
        default="NFKC", description="Unicode normalization (NFKC also folds ligatures and full-width forms)"
    )
    lowercase: bool = False
    strip: bool = Field(default=True, description="remove white space at both ends")
    collapse_whitespace: bool = Field(default=True, description="runs of white space become one space")
    remove_control: bool = Field(default=True, description="drop control and zero-width characters")
    min_length: int | None = Field(
        default=None, ge=0, description="characters after cleaning; default: the model's minLength"
    )
    max_length: int | None = Field(
        default=None, ge=1, description="characters after cleaning; default: the model's maxLength"
    )
    truncate: bool = Field(default=False, description="cut longer text to max_length instead of refusing it")
    max_input_length: int = Field(
        default=100_000, ge=1, le=5_000_000, description="the longest text a request may send when truncating"
    )


def _string_props(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if schema.get("type") != "object":
        return {}
    props: dict[str, Any] = schema.get("properties", {})
    return {n: p for n, p in props.items() if isinstance(p, dict) and p.get("type") == "string"}


class TextStep(Step):
    name = "text"
    stage = "pre"
    params_model = TextParams
    summary = "a JSON string property -> Unicode-normalized, cleaned, length-limited"
    params: TextParams

    def _field(self, upstream: Json) -> tuple[str, dict[str, Any]]:
        strings = _string_props(upstream.json_schema)
        wanted = self.params.field
        if wanted is not None:
            if wanted not in strings:
                raise ProtocolError(
                    f"pre step text cleans property {wanted!r}, but the input's string properties are: "
                    + (", ".join(map(repr, strings)) or "none")
                )
            return wanted, strings[wanted]
        if len(strings) != 1:
            raise ProtocolError(
                "pre step text needs one string property to clean; the input has "
                + (", ".join(map(repr, strings)) or "none"),
                hint="choose it with - text: {field: NAME}",
            )
        ((name, schema),) = strings.items()
        return name, schema

    def _model_field(self, ctx: StepContext, name: str) -> dict[str, Any]:
        native = ctx.native.inputs
        if isinstance(native, Json):
            return _string_props(native.json_schema).get(name, {})
        return {}

    def limits(self, ctx: StepContext, name: str) -> tuple[int, int | None]:
        """(min, max) characters of the cleaned text: the parameters, else the model's own limits."""
        model = self._model_field(ctx, name)
        low = self.params.min_length if self.params.min_length is not None else model.get("minLength", 0)
        high = self.params.max_length if self.params.max_length is not None else model.get("maxLength")
        if high is not None and low > high:
            raise ProtocolError(f"pre step text: min_length {low} is more than max_length {high}")
        if self.params.truncate and high is None:
            raise ProtocolError("pre step text: truncate needs max_length (the model sets none)")
        return low, high

    def public_input(self, ctx: StepContext) -> Value:
        native = ctx.native.inputs
        if not isinstance(native, Json):
            raise ProtocolError(
                f"pre step text cleans a predictor's JSON text, but the {ctx.native.framework} model takes "
                f"{native.describe()}"
            )
        name, schema = self._field(native)
        low, high = self.limits(ctx, name)
        public = {k: v for k, v in schema.items() if k not in ("minLength", "maxLength")}
        limit = self.params.max_input_length if self.params.truncate or high is None else high
        public["maxLength"] = limit
        if low:
            public["minLength"] = 1  # white space alone may clean to less; that is checked after cleaning
        props = {**native.json_schema["properties"], name: public}
        return Json(json_schema={**native.json_schema, "properties": props})

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not isinstance(upstream, Json):
            raise self.refuse(upstream, "a JSON object with a string property")
        name, schema = self._field(upstream)
        low, high = self.limits(ctx, name)
        cleaned = {k: v for k, v in schema.items() if k not in ("minLength", "maxLength")}
        if low:
            cleaned["minLength"] = low
        if high is not None:
            cleaned["maxLength"] = high
        props = {**upstream.json_schema["properties"], name: cleaned}
        return Json(json_schema={**upstream.json_schema, "properties": props})


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


# --------------------------------------------------------------------------- post steps


def _float_output(
    upstream: Value, step: str, output: str | None, ranks: tuple[int, ...], what: str, shape: str
) -> TensorSpec:
    """The one float output of one of ``ranks`` a post step reads (``output`` names it): ``what`` it
    holds (``class scores``) and its ``shape`` (``[batch, classes]``), for messages."""
    if not isinstance(upstream, Tensors):
        hint = None
        if isinstance(upstream, Figure):
            hint = "a visualization step must be the last post step"
        raise ProtocolError(f"post step {step} takes {what} but receives {upstream.describe()}", hint=hint)
    candidates = [
        t
        for t in upstream.tensors
        if t.datatype in FLOAT_TYPES and len(t.shape) in ranks and (output is None or t.name == output)
    ]
    if output is not None and not candidates:
        names = ", ".join(f"{t.name}: {t.describe()}" for t in upstream.tensors)
        raise ProtocolError(f"post step {step} reads output {output!r}, but the model's outputs are: {names}")
    if len(candidates) != 1:
        described = ", ".join(f"{t.name}: {t.describe()}" for t in upstream.tensors)
        raise ProtocolError(
            f"post step {step} needs one float {shape} output of {what}, model gives {described}",
            hint=f"choose one with - {step}: {{output: NAME}}",
        )
    return candidates[0]


def _scores_tensor(upstream: Value, step: str, output: str | None) -> TensorSpec:
    return _float_output(upstream, step, output, (1, 2), "class scores", "[batch, classes]")


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


class SoftmaxParams(Params):
    output: str | None = Field(default=None, description="the model output of [batch, classes] logits")
    temperature: float = Field(default=1.0, ge=0.01, le=100, description="logits are divided by it first")


class Softmax(Step):
    name = "softmax"
    stage = "post"
    params_model = SoftmaxParams
    summary = "logits -> probabilities over the last axis (same shape)"
    params: SoftmaxParams

    def target(self, upstream: Value) -> TensorSpec:
        return _float_output(upstream, self.name, self.params.output, (2,), "logits", "[batch, classes]")

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.target(upstream)
        return upstream


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


class ThresholdParams(Params):
    threshold: float = Field(
        default=0.5, description="the second label when P(second class) >= threshold, else the first"
    )
    output: str | None = Field(default=None, description="the model output holding the scores")


class Threshold(Step):
    name = "threshold"
    stage = "post"
    params_model = ThresholdParams
    summary = "binary scores -> the decided label with its probability ([{label, score}], one per row)"
    params: ThresholdParams

    def scores(self, upstream: Value) -> TensorSpec:
        scores = _float_output(
            upstream, self.name, self.params.output, (1, 2), "binary scores", "[batch] or [batch, 1 or 2]"
        )
        width = scores.shape[-1] if len(scores.shape) == 2 else 1
        if is_fixed(width) and width not in (1, 2):
            raise ProtocolError(
                f"post step threshold decides between two classes but output {scores.name!r} gives "
                f"{scores.describe()} ({width} class scores)",
                hint="use labels or top_k for more classes",
            )
        return scores

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.scores(upstream)
        if ctx.labels is None or len(ctx.labels) != 2:
            got = "none" if ctx.labels is None else f"{len(ctx.labels)}"
            raise ProtocolError(
                f"post step threshold needs two labels (negative first, positive second), got {got}",
                hint="add labels: [negative, positive] to modelport.yaml",
            )
        return Labels(labels=ctx.labels, top_k=1)


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
        return _prediction_tensor(upstream, self.name, self.params.output)

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.target(upstream)
        return Json(json_schema=regression_schema(self.params.unit))


def _prediction_tensor(upstream: Value, step: str, output: str | None) -> TensorSpec:
    tensor = _float_output(upstream, step, output, (1, 2), "predictions", "[batch] or [batch, 1]")
    if len(tensor.shape) == 2 and is_fixed(tensor.shape[1]) and tensor.shape[1] != 1:
        raise ProtocolError(
            f"post step {step} takes one prediction per row but output {tensor.name!r} gives "
            f"{tensor.describe()}"
        )
    return tensor


class BoxesParams(Params):
    layout: Literal["separate", "combined"] = Field(
        default="separate",
        description="separate: outputs boxes [.., N, 4], scores [.., N] or [.., N, classes] and optional "
        "classes [.., N]; combined: one output [.., N, 4 + classes]",
    )
    boxes: str | None = Field(default=None, description="the output holding the boxes")
    scores: str | None = Field(default=None, description="the output holding the scores (separate)")
    classes: str | None = Field(default=None, description="the output holding class indices (separate)")
    format: Literal["xyxy", "xywh", "cxcywh"] = Field(
        default="xyxy", description="corners, corner + size, or centre + size"
    )
    normalized: bool = Field(default=False, description="coordinates are 0..1 of the model input's size")
    score_threshold: float = Field(default=0.5, ge=0, le=1, description="drop detections scoring less")
    iou_threshold: float | None = Field(
        default=0.5, ge=0, le=1, description="non-maximum suppression overlap per class; null: none"
    )
    max_detections: int = Field(default=100, ge=1, le=1000)


@dataclass(frozen=True)
class BoxesPlan:
    """Which outputs the boxes step reads, resolved at config time and replayed by the runtime."""

    boxes: str
    scores: str | None
    classes: str | None
    n_classes: int | None  # class-score columns, when the scores are per class


class BoxesStep(Step):
    name = "boxes"
    stage = "post"
    params_model = BoxesParams
    summary = "detector outputs -> [{box, label, score}] per image, thresholded and suppressed (NMS)"
    params: BoxesParams

    def plan(self, upstream: Value, ctx: StepContext) -> BoxesPlan:
        if not isinstance(upstream, Tensors):
            raise self.refuse(upstream, "a detector's output tensors")
        p = self.params
        by_name = {t.name: t for t in upstream.tensors}
        described = ", ".join(f"{t.name}: {t.describe()}" for t in upstream.tensors)

        def named(name: str, what: str) -> TensorSpec:
            if name not in by_name:
                raise ProtocolError(
                    f"post step boxes reads {what} from {name!r}; the model gives {described}"
                )
            return by_name[name]

        def pick(
            what: str,
            fits: Callable[[TensorSpec], bool],
            hints: tuple[str, ...],
            exclude: tuple[str, ...] = (),
        ) -> TensorSpec | None:
            """The one output that fits; among several, the one whose name says so, else the highest rank."""
            found = [t for t in upstream.tensors if t.name not in exclude and fits(t)]
            named_so = [t for t in found if any(h in t.name.lower() for h in hints)]
            found = named_so or found
            top = max((len(t.shape) for t in found), default=0)
            found = [t for t in found if len(t.shape) == top]
            if len(found) > 1:
                raise ProtocolError(
                    f"post step boxes finds several outputs that could hold {what} ({described})",
                    hint="name them: - boxes: {boxes: NAME, scores: NAME, classes: NAME}",
                )
            return found[0] if found else None

        def last(t: TensorSpec) -> int | str:
            return t.shape[-1] if t.shape else -1

        floats = [t for t in upstream.tensors if t.datatype in FLOAT_TYPES]
        if p.layout == "combined":
            boxes = (
                named(p.boxes, "boxes")
                if p.boxes
                else pick("boxes", lambda t: t in floats and len(t.shape) in (2, 3), ("box", "det", "output"))
            )
            if boxes is None or boxes not in floats or len(boxes.shape) not in (2, 3):
                raise ProtocolError(
                    f"post step boxes (combined) needs a float output [.., N, 4 + classes]; model gives "
                    f"{described}"
                )
            width = last(boxes)
            if is_fixed(width) and int(width) < 5:
                raise ProtocolError(
                    f"post step boxes (combined) needs [.., N, 4 + classes] but {boxes.name!r} gives "
                    f"{boxes.describe()}"
                )
            n = int(width) - 4 if is_fixed(width) else None
            plan = BoxesPlan(boxes.name, None, None, None if n == 1 else n)
        else:
            boxes = (
                named(p.boxes, "boxes")
                if p.boxes
                else pick(
                    "boxes", lambda t: t in floats and len(t.shape) in (2, 3) and last(t) == 4, ("box",)
                )
            )
            if boxes is None or boxes not in floats or len(boxes.shape) not in (2, 3) or last(boxes) != 4:
                raise ProtocolError(
                    f"post step boxes needs a float output of boxes [.., N, 4]; model gives {described}",
                    hint="for one output [.., N, 4 + classes] use - boxes: {layout: combined}",
                )
            rank = len(boxes.shape)
            scores = (
                named(p.scores, "scores")
                if p.scores
                else pick(
                    "scores",
                    lambda t: t in floats and len(t.shape) in (rank - 1, rank),
                    ("score", "conf", "prob"),
                    (boxes.name,),
                )
            )
            if scores is None or scores not in floats or len(scores.shape) not in (rank - 1, rank):
                raise ProtocolError(
                    f"post step boxes needs a float output of scores ([.., N] or [.., N, classes]) beside "
                    f"{boxes.name!r}; model gives {described}"
                )
            classes = (
                named(p.classes, "class indices")
                if p.classes
                else pick(
                    "class indices",
                    lambda t: t.datatype in INT_TYPES and len(t.shape) == rank - 1,
                    ("class", "label"),
                    (boxes.name, scores.name),
                )
            )
            if classes is not None and (classes.datatype not in (*INT_TYPES, *FLOAT_TYPES)):
                raise ProtocolError(f"post step boxes: class indices {classes.name!r} are not numbers")
            per_class = len(scores.shape) == rank
            n = int(last(scores)) if per_class and is_fixed(last(scores)) else None
            if per_class and not p.classes:
                classes = None  # the classes are the argmax of the per-class scores
            if per_class and classes is not None:
                raise ProtocolError(
                    f"post step boxes: {scores.name!r} holds per-class scores, so {classes.name!r} is not "
                    "needed",
                    hint="leave classes out",
                )
            plan = BoxesPlan(boxes.name, scores.name, None if classes is None else classes.name, n)
        labels = ctx.labels
        if labels is not None and plan.n_classes is not None and plan.n_classes != len(labels):
            raise ProtocolError(
                f"post step boxes has {len(labels)} labels but the model scores {plan.n_classes} classes"
            )
        return plan

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.plan(upstream, ctx)
        return Boxes(labels=ctx.labels, max_detections=self.params.max_detections)


# --------------------------------------------------------------------------- visualization steps


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
            labels = _labels_for(upstream, ctx, self.name, self.params.output)
            k = self.params.top_k
            data = Labels(labels=labels, top_k=min(k, len(labels)) if k else len(labels))
        return Figure(chart=self.name, data=data)


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
            _prediction_tensor(upstream, self.name, self.params.output)
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


class OverlayParams(ChartParams):
    max_size: int = Field(default=1024, ge=64, le=4096, description="longest side of the picture, pixels")
    min_size: int = Field(default=320, ge=32, le=4096, description="small images are enlarged to this")
    line_width: int = Field(default=3, ge=1, le=20)
    font_size: int = Field(default=14, ge=6, le=72)
    scores: bool = Field(default=True, description="write each box's score after its label")


class Overlay(Step):
    name = "overlay"
    stage = "post"
    params_model = OverlayParams
    packages = ("pillow",)
    summary = "detections -> boxes and labels drawn on the request's image (PNG, plus the detections)"
    params: OverlayParams

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not isinstance(upstream, Boxes):
            raise self.refuse(upstream, "boxes (put - boxes before it)")
        if not isinstance(ctx.request, EncodedImage):
            got = ctx.request.describe() if ctx.request else "unknown"
            raise ProtocolError(
                f"post step overlay draws on the request's image, but the request is {got}",
                hint="put - image first under processing.pre",
            )
        return Figure(chart=self.name, data=upstream)


BUILTIN_STEPS: dict[str, type[Step]] = {
    cls.name: cls
    for cls in (
        Tabular,
        Image,
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


# --------------------------------------------------------------------------- user steps


def json_form(value: Value) -> dict[str, Any] | None:
    """The JSON Schema of the data a JSON-typed user step receives for ``value`` (None: not JSON)."""
    if isinstance(value, Json):
        return value.json_schema
    if isinstance(value, Labels | Boxes):
        schema = response_wire(value).json_schema
        return dict(next(iter(schema["properties"].values())))
    return None


class UserStep(Step):
    """A user's ``path/file.py:function``; it runs only inside the model's container.

    Its annotations (read at config time without importing it) type it like a built-in: the parameter
    says what it accepts, the return what it produces. JSON types (``dict[str, float]``, a TypedDict, ...)
    receive JSON data (labels and boxes in their response form); ``dict[str, np.ndarray]`` receives or
    returns tensors named like the model's inputs (pre) or outputs (post); ``np.ndarray`` one tensor.

    A side left unannotated bridges its neighbour: an unannotated parameter takes whatever comes (the
    request's JSON when first), an unannotated return gives JSON that only the runtime checks (the model
    rejects what it cannot take; as the last post step it is the response's ``output``)."""

    name = "user"
    stage = "pre"
    params_model = Params
    summary = "user code"

    def __init__(self, ref: str, stage: Stage) -> None:
        super().__init__(Params())
        self.ref = ref
        self.stage_of = stage

    def signature(self, ctx: StepContext) -> UserSignature:
        return ctx.user_types.get(self.ref) or UserSignature(ref=self.ref, accepts=None, returns=None)

    def _refuse(self, upstream: Value, wants: str, hint: str | None = None) -> ProtocolError:
        return ProtocolError(
            f"{self.stage_of} step {self.ref} takes {wants} but receives {upstream.describe()}", hint=hint
        )

    def public_input(self, ctx: StepContext) -> Value:
        accepts = self.signature(ctx).accepts
        if accepts is None:
            return Json()
        if accepts.kind == "json":
            return Json(json_schema=accepts.json_schema)
        inputs = ctx.native.inputs
        if not isinstance(inputs, Tensors) or (accepts.kind == "tensor" and len(inputs.tensors) != 1):
            raise ProtocolError(
                f"pre step {self.ref} takes {accepts.describe()} as the first step, but the model's input "
                f"is {inputs.describe()}"
            )
        return inputs

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        sig = self.signature(ctx)
        if isinstance(upstream, Figure):
            raise self._refuse(upstream, "a value", "a visualization step must be the last post step")
        accepts = sig.accepts
        if accepts is not None:
            if accepts.kind == "json":
                schema = json_form(upstream)
                if schema is None:
                    raise self._refuse(
                        upstream,
                        accepts.describe(),
                        "annotate the parameter dict[str, np.ndarray] to receive tensors",
                    )
                if not schema_fits(schema, accepts.json_schema):
                    raise self._refuse(
                        upstream,
                        accepts.describe() + " (" + _short(accepts.json_schema) + ")",
                        "the upstream gives " + _short(schema),
                    )
            elif not isinstance(upstream, Tensors) or (
                accepts.kind == "tensor" and len(upstream.tensors) != 1
            ):
                raise self._refuse(upstream, accepts.describe())
        returns = sig.returns
        if returns is None:
            return Json()
        if returns.kind == "json":
            return Json(json_schema=returns.json_schema)
        neighbour = ctx.native.inputs if self.stage_of == "pre" else upstream
        if not isinstance(neighbour, Tensors) or (returns.kind == "tensor" and len(neighbour.tensors) != 1):
            where = "the model's input" if self.stage_of == "pre" else "its upstream"
            raise ProtocolError(
                f"{self.stage_of} step {self.ref} returns {returns.describe()}, named like {where}, "
                f"which is {neighbour.describe()}",
                hint="return JSON data instead" if self.stage_of == "post" else None,
            )
        return neighbour


def _short(schema: dict[str, Any], limit: int = 160) -> str:
    text = json.dumps(schema, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
