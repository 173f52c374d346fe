"""The ``image`` pre step: encoded image bytes to the model's tensor."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from chalicelib.core.protocol import (
    DataType,
    EncodedImage,
    Frozen,
    Tensors,
    TensorSpec,
    Value,
)
from chalicelib.core.steps.base import Params, Step, StepContext


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


class ImageArgs(Frozen):
    """What ``ImageRun`` is built from."""

    params: ImageParams
    input: str
    formats: tuple[str, ...]


class ImageStep(Step):
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

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> ImageArgs:
        assert isinstance(upstream, EncodedImage) and isinstance(produced, Tensors)
        return ImageArgs(params=self.params, input=produced.tensors[0].name, formats=upstream.formats)
