"""What every run step shares: how it is called, what a request's pre steps leave for its post steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

LabelRows = list[list[tuple[str, float]]]
"""Per request row, ``(label, score)`` best first."""


@dataclass(frozen=True)
class Table:
    """A records request before the tabular step: a parsed JSON body, or CSV text."""

    json: Any = None
    csv: str | None = None


@dataclass(frozen=True)
class Geometry:
    """How the request's image was fitted to the model input, to map model pixels back to it:
    ``model = (source - src) * scale + dst`` per axis."""

    width: int  # the request's image, after its EXIF rotation
    height: int
    model_width: int
    model_height: int
    scale_x: float = 1.0
    scale_y: float = 1.0
    src_x: float = 0.0
    src_y: float = 0.0
    dst_x: float = 0.0
    dst_y: float = 0.0

    def to_source(self, boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``[N, 4]`` xyxy boxes in model pixels -> the request image's pixels, clipped to it."""
        out = np.empty_like(boxes)
        out[:, 0::2] = (boxes[:, 0::2] - self.dst_x) / self.scale_x + self.src_x
        out[:, 1::2] = (boxes[:, 1::2] - self.dst_y) / self.scale_y + self.src_y
        out[:, 0::2] = np.clip(out[:, 0::2], 0, self.width)
        out[:, 1::2] = np.clip(out[:, 1::2], 0, self.height)
        return out


@dataclass
class StepCall:
    """What one request's pre steps leave for its post steps."""

    table: tuple[tuple[str, ...], npt.NDArray[np.float64]] | None = None  # features, rows x features
    image: Any = None  # the decoded request image (PIL), EXIF-rotated, transparency flattened
    geometry: Geometry | None = None


@dataclass(frozen=True)
class RunStep:
    """One step bound to its arguments, called as ``run(value, inv)``. ``contained``: its failures are
    the model's or user code's (502 naming ``stage``) rather than the runtime's. ``timing``: its key in
    the response's timings (``pre.tabular``; a Server-Timing metric name)."""

    stage: str
    run: Callable[..., Any]
    contained: bool
    timing: str = ""


@dataclass(frozen=True)
class FigureValue:
    """A rendered chart travelling with the value it pictures."""

    data: Any
    png: bytes
