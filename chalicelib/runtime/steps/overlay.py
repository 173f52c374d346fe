"""The ``overlay`` post step at runtime: detections drawn on the request's image with Pillow."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.core.steps.overlay import OverlayArgs
from chalicelib.runtime.steps.base import FigureValue, StepCall
from chalicelib.runtime.steps.drawing import png_of, short

PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
"""Box colours by class (matplotlib's tab10)."""


class OverlayRun:
    """Detections drawn on the request's image with Pillow: a coloured frame per box (colour by
    class), ``label score`` on a tag above it, and a title band naming the count. The image is
    shrunk to ``max_size`` or enlarged (nearest neighbour, so pixels stay sharp) to ``min_size``."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> OverlayRun:
        """Built from the arguments the config file records (``OverlayArgs``)."""
        a = OverlayArgs.model_validate(args)
        return cls(a.title, a.labels, a.max_size, a.min_size, a.line_width, a.font_size, a.scores)

    def __init__(
        self,
        title: str,
        labels: tuple[str, ...] | None,
        max_size: int,
        min_size: int,
        line_width: int,
        font_size: int,
        scores: bool,
    ) -> None:
        from PIL import Image as PILImage
        from PIL import ImageDraw, ImageFont

        self.pil = PILImage
        self.draw_class = ImageDraw
        self.font = ImageFont.load_default(size=font_size)
        self.title_font = ImageFont.load_default(size=font_size + 2)
        self.title = title
        self.labels = labels
        self.max_size = max_size
        self.min_size = min(min_size, max_size)
        self.line_width = line_width
        self.font_size = font_size
        self.scores = scores

    def __call__(self, value: list[list[dict[str, Any]]], inv: StepCall | None = None) -> FigureValue:
        if inv is None or inv.image is None:
            raise ValueError("overlay needs the request's image, which this invocation does not have")
        return FigureValue(data=value, png=self.render(inv.image, value[0] if value else []))

    def colour(self, label: str) -> tuple[int, int, int]:
        if self.labels is not None and label in self.labels:
            index = self.labels.index(label)
        elif label.isdigit():
            index = int(label)
        else:
            index = zlib.crc32(label.encode())
        return PALETTE[index % len(PALETTE)]

    def render(self, source: Any, detections: Sequence[Mapping[str, Any]]) -> bytes:
        pil = self.pil
        image = source.convert("RGB")
        longest = max(image.size)
        factor = 1.0
        if longest > self.max_size:
            factor = self.max_size / longest
        elif longest < self.min_size:  # a whole factor, so every source pixel stays a sharp square
            factor = float(min(math.ceil(self.min_size / longest), self.max_size // longest))
        if factor != 1.0:
            size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
            method = pil.Resampling.BOX if factor < 1 else pil.Resampling.NEAREST
            image = image.resize(size, method)
        pad = max(4, self.font_size // 3)
        band = self.font_size + 2 + 2 * pad
        canvas = pil.new("RGB", (max(image.width, 240), image.height + band), (255, 255, 255))
        canvas.paste(image, (0, band))
        draw = self.draw_class.Draw(canvas)
        count = len(detections)
        heading = f"{self.title}: {count} object" + ("" if count == 1 else "s")
        draw.text((pad, pad), heading, fill=(0, 0, 0), font=self.title_font)
        width = self.line_width
        for det in reversed(detections):  # the best is drawn last, on top
            x1, y1, x2, y2 = (float(c) * factor for c in det["box"])
            y1, y2 = y1 + band, y2 + band
            colour = self.colour(str(det["label"]))
            draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=colour, width=width)
            text = short(str(det["label"]), 24)
            if self.scores:
                text += f" {float(det['score']):.2f}"
            left, top, right, bottom = draw.textbbox((0, 0), text, font=self.font)
            tag_w, tag_h = right - left + 2 * pad, bottom - top + pad
            tx = min(max(0.0, x1), canvas.width - tag_w)
            ty = y1 - tag_h if y1 - tag_h >= band else y1  # above the box, else just inside it
            draw.rectangle((tx, ty, tx + tag_w, ty + tag_h), fill=colour)
            luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
            ink = (0, 0, 0) if luminance > 150 else (255, 255, 255)
            draw.text((tx + pad - left, ty + pad // 2 - top), text, fill=ink, font=self.font)
        return png_of(canvas)
