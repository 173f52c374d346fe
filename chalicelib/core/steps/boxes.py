"""The ``boxes`` post step: a detector's outputs to thresholded, suppressed detections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    FLOAT_TYPES,
    INT_TYPES,
    Boxes,
    Frozen,
    Tensors,
    TensorSpec,
    Value,
    is_fixed,
)
from chalicelib.core.steps.base import Params, Step, StepContext


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


class BoxesArgs(Frozen):
    """What ``BoxesRun`` is built from: the outputs it reads, its parameters and the labels."""

    boxes: str
    scores: str | None
    classes: str | None
    n_classes: int | None
    params: BoxesParams
    labels: tuple[str, ...] | None

    def plan(self) -> BoxesPlan:
        return BoxesPlan(self.boxes, self.scores, self.classes, self.n_classes)


def _last(t: TensorSpec) -> int | str:
    return t.shape[-1] if t.shape else -1


class _Outputs:
    """A detector's output tensors, for choosing which holds the boxes, the scores and the classes."""

    def __init__(self, upstream: Tensors) -> None:
        self.tensors = upstream.tensors
        self.by_name = {t.name: t for t in upstream.tensors}
        self.floats = [t for t in upstream.tensors if t.datatype in FLOAT_TYPES]
        self.described = ", ".join(f"{t.name}: {t.describe()}" for t in upstream.tensors)

    def named(self, name: str, what: str) -> TensorSpec:
        if name not in self.by_name:
            raise ProtocolError(
                f"post step boxes reads {what} from {name!r}; the model gives {self.described}"
            )
        return self.by_name[name]

    def pick(
        self,
        what: str,
        fits: Callable[[TensorSpec], bool],
        hints: tuple[str, ...],
        exclude: tuple[str, ...] = (),
    ) -> TensorSpec | None:
        """The one output that fits; among several, the one whose name says so, else the highest rank."""
        found = [t for t in self.tensors if t.name not in exclude and fits(t)]
        named_so = [t for t in found if any(h in t.name.lower() for h in hints)]
        found = named_so or found
        top = max((len(t.shape) for t in found), default=0)
        found = [t for t in found if len(t.shape) == top]
        if len(found) > 1:
            raise ProtocolError(
                f"post step boxes finds several outputs that could hold {what} ({self.described})",
                hint="name them: - boxes: {boxes: NAME, scores: NAME, classes: NAME}",
            )
        return found[0] if found else None

    def chosen(
        self,
        name: str | None,
        what: str,
        fits: Callable[[TensorSpec], bool],
        hints: tuple[str, ...],
        *exclude: str,
    ) -> TensorSpec | None:
        """The output ``name`` when the parameters name it, else the one that ``fits``."""
        return self.named(name, what) if name else self.pick(what, fits, hints, exclude)


def _combined_plan(p: BoxesParams, out: _Outputs) -> BoxesPlan:
    """One output ``[.., N, 4 + classes]``."""
    floats = out.floats
    boxes = out.chosen(
        p.boxes, "boxes", lambda t: t in floats and len(t.shape) in (2, 3), ("box", "det", "output")
    )
    if boxes is None or boxes not in floats or len(boxes.shape) not in (2, 3):
        raise ProtocolError(
            f"post step boxes (combined) needs a float output [.., N, 4 + classes]; model gives "
            f"{out.described}"
        )
    width = _last(boxes)
    if is_fixed(width) and int(width) < 5:
        raise ProtocolError(
            f"post step boxes (combined) needs [.., N, 4 + classes] but {boxes.name!r} gives "
            f"{boxes.describe()}"
        )
    n = int(width) - 4 if is_fixed(width) else None
    return BoxesPlan(boxes.name, None, None, None if n == 1 else n)


def _separate_plan(p: BoxesParams, out: _Outputs) -> BoxesPlan:
    """Boxes ``[.., N, 4]``, scores ``[.., N]`` or ``[.., N, classes]``, class indices ``[.., N]`` or none."""
    floats, described = out.floats, out.described
    boxes = out.chosen(
        p.boxes, "boxes", lambda t: t in floats and len(t.shape) in (2, 3) and _last(t) == 4, ("box",)
    )
    if boxes is None or boxes not in floats or len(boxes.shape) not in (2, 3) or _last(boxes) != 4:
        raise ProtocolError(
            f"post step boxes needs a float output of boxes [.., N, 4]; model gives {described}",
            hint="for one output [.., N, 4 + classes] use - boxes: {layout: combined}",
        )
    rank = len(boxes.shape)
    scores = out.chosen(
        p.scores,
        "scores",
        lambda t: t in floats and len(t.shape) in (rank - 1, rank),
        ("score", "conf", "prob"),
        boxes.name,
    )
    if scores is None or scores not in floats or len(scores.shape) not in (rank - 1, rank):
        raise ProtocolError(
            f"post step boxes needs a float output of scores ([.., N] or [.., N, classes]) beside "
            f"{boxes.name!r}; model gives {described}"
        )
    classes = out.chosen(
        p.classes,
        "class indices",
        lambda t: t.datatype in INT_TYPES and len(t.shape) == rank - 1,
        ("class", "label"),
        boxes.name,
        scores.name,
    )
    if classes is not None and (classes.datatype not in (*INT_TYPES, *FLOAT_TYPES)):
        raise ProtocolError(f"post step boxes: class indices {classes.name!r} are not numbers")
    per_class = len(scores.shape) == rank
    n = int(_last(scores)) if per_class and is_fixed(_last(scores)) else None
    if per_class and not p.classes:
        classes = None  # the classes are the argmax of the per-class scores
    if per_class and classes is not None:
        raise ProtocolError(
            f"post step boxes: {scores.name!r} holds per-class scores, so {classes.name!r} is not needed",
            hint="leave classes out",
        )
    return BoxesPlan(boxes.name, scores.name, None if classes is None else classes.name, n)


class BoxesStep(Step):
    name = "boxes"
    stage = "post"
    params_model = BoxesParams
    summary = "detector outputs -> [{box, label, score}] per image, thresholded and suppressed (NMS)"
    params: BoxesParams

    def plan(self, upstream: Value, ctx: StepContext) -> BoxesPlan:
        if not isinstance(upstream, Tensors):
            raise self.refuse(upstream, "a detector's output tensors")
        outputs = _Outputs(upstream)
        if self.params.layout == "combined":
            plan = _combined_plan(self.params, outputs)
        else:
            plan = _separate_plan(self.params, outputs)
        labels = ctx.labels
        if labels is not None and plan.n_classes is not None and plan.n_classes != len(labels):
            raise ProtocolError(
                f"post step boxes has {len(labels)} labels but the model scores {plan.n_classes} classes"
            )
        return plan

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.plan(upstream, ctx)
        return Boxes(labels=ctx.labels, max_detections=self.params.max_detections)

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> BoxesArgs:
        assert isinstance(produced, Boxes)
        plan = self.plan(upstream, ctx)
        return BoxesArgs(
            boxes=plan.boxes,
            scores=plan.scores,
            classes=plan.classes,
            n_classes=plan.n_classes,
            params=self.params,
            labels=produced.labels,
        )
