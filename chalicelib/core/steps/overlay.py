"""The ``overlay`` post step: detections drawn on the request's image."""

from __future__ import annotations

from pydantic import Field

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    Boxes,
    EncodedImage,
    Figure,
    Frozen,
    Value,
)
from chalicelib.core.steps.base import Step, StepContext, title_of
from chalicelib.core.steps.charts import ChartParams


class OverlayArgs(Frozen):
    """What ``OverlayRun`` is built from."""

    title: str
    labels: tuple[str, ...] | None
    max_size: int
    min_size: int
    line_width: int
    font_size: int
    scores: bool


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

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> OverlayArgs:
        assert isinstance(upstream, Boxes)
        p = self.params
        return OverlayArgs(
            title=title_of(p, ctx),
            labels=upstream.labels,
            max_size=p.max_size,
            min_size=p.min_size,
            line_width=p.line_width,
            font_size=p.font_size,
            scores=p.scores,
        )
