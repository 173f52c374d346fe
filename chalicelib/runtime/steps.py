"""The runtime side of the processing steps: what each step does to real data.

The control plane knows a step by its protocol transform (``core/steps.py``); here the same chain is
replayed once at init (``build_steps``) to learn each step's concrete arguments - the feature order, the
model input's name and dtype, which output holds the class scores - so a request only runs array code.
Built-in pre steps raise ``RequestError`` for anything the client sent wrong; every other failure in a
user step or a post step is the model's (the handler answers 502 naming the step).

Each step is called as ``run(value, inv)``: ``inv`` is the request's ``Invocation``, where pre steps
leave what post steps may need of the request (the tabular rows, the decoded image and how it was fitted
to the model's input) - a line chart plots against a request feature, an overlay draws on the image.
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.core.config import StepRef
from chalicelib.core.manifest import ModelConfigFile
from chalicelib.core.protocol import Boxes, EncodedImage, Figure, Json, Labels, Records, Tensors, Value
from chalicelib.core.steps import Step, StepContext, UserStep, UserType
from chalicelib.core.steps.boxes import BoxesParams, BoxesPlan, BoxesStep
from chalicelib.core.steps.charts import BarChart, Heatmap, LineChart
from chalicelib.core.steps.image import ImageParams, ImageStep
from chalicelib.core.steps.overlay import Overlay
from chalicelib.core.steps.regression import Regression, is_regression, prediction_tensor
from chalicelib.core.steps.scale import Scale
from chalicelib.core.steps.scores import LabelsStep, Softmax, Threshold, scores_tensor
from chalicelib.core.steps.tabular import Tabular
from chalicelib.core.steps.text import TextStep
from chalicelib.runtime.codecs import (
    Problems,
    RequestError,
    check_schema,
    invalid,
    json_type,
    object_with,
    pointer,
    to_jsonable,
)
from chalicelib.runtime.loaders import ModelLoadError, import_user_file
from chalicelib.runtime.viz import (
    MAX_BARS,
    BarChartRun,
    FeatureChartRun,
    FigureValue,
    HeatmapRun,
    OverlayRun,
)

__all__ = ["MAX_BARS", "FigureValue", "Invocation", "RunStep", "Table", "build_steps"]

MAX_PIXELS = 40_000_000
"""Images above this many pixels are refused before decoding: 40 MP of RGB is 120 MB of memory."""

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
class Invocation:
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


# --------------------------------------------------------------------------- tabular


def _number(value: Any, where: str, problems: Problems) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(f"expected a number, got {json_type(value)}", pointer=where)
        return 0.0
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer
        problems.add("is too large for a 64-bit float", pointer=where)
        return 0.0
    if not math.isfinite(number):
        problems.add("must be a finite number (no NaN or infinity)", pointer=where)
        return 0.0
    return number


class TabularRun:
    """Records, rows or CSV -> one float matrix in the model's feature order. Categorical features
    take their names (``categories``) and become the numbers they map to."""

    def __init__(
        self,
        features: tuple[str, ...],
        input_name: str,
        dtype: npt.DTypeLike,
        categories: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.features = features
        self.index = {name: j for j, name in enumerate(features)}
        self.input_name = input_name
        self.dtype = np.dtype(dtype)
        self.categories = {self.index[n]: dict(m) for n, m in (categories or {}).items()}
        self.category_names = {name for m in self.categories.values() for name in m}
        info = np.iinfo(self.dtype) if self.dtype.kind in "iu" else None
        if info is None and self.dtype.kind == "f" and self.dtype.itemsize < 8:
            info = np.finfo(self.dtype)  # type: ignore[assignment]
        self._range = None if info is None else (float(info.min), float(info.max))

    def __call__(self, table: Table, inv: Invocation | None = None) -> dict[str, npt.NDArray[Any]]:
        matrix = self._from_csv(table.csv) if table.csv is not None else self._from_json(table.json)
        if inv is not None:
            inv.table = (self.features, matrix)
        return {self.input_name: self._cast(matrix)}

    def _cast(self, matrix: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The matrix in the model's dtype; a value that does not fit it (1e39 for float32, which would
        become infinity and NaN scores) is the request's mistake, a 400. The cells are finite float64
        already: two reductions, no cast to look at (a few µs for one row)."""
        if self._range is not None and matrix.size:
            low, high = self._range
            if matrix.min() < low or matrix.max() > high:
                i, j = (int(k) for k in np.argwhere((matrix < low) | (matrix > high))[0])
                name, dtype = self.features[j], self.dtype.name
                raise RequestError(
                    f"row {i + 1}, {name}: {matrix[i, j]:g} does not fit {dtype}",
                    errors=[{"row": i + 1, "column": name, "message": f"does not fit {dtype}"}],
                )
        return matrix.astype(self.dtype, copy=False)

    def _category(self, j: int, value: Any, problems: Problems, **where: Any) -> float:
        mapping = self.categories[j]
        if isinstance(value, str) and value in mapping:
            return mapping[value]
        allowed = ", ".join(repr(k) for k in mapping)
        got = repr(value) if isinstance(value, str) else json_type(value)
        problems.add(f"expected one of {allowed}, got {got}", **where)
        return 0.0

    def _cell(self, j: int, value: Any, where: str, problems: Problems) -> float:
        if j in self.categories:
            return self._category(j, value, problems, pointer=where)
        return _number(value, where, problems)

    def _from_json(self, doc: Any) -> npt.NDArray[Any]:
        key, items = object_with(doc, ("records", "rows"), "the request")
        base = pointer("", key)
        if not isinstance(items, list):
            raise invalid(f"expected an array of {key}, got {json_type(items)}", base)
        if not items:
            raise invalid(f"send at least one {key[:-1]}", base)
        n = len(self.features)
        matrix = np.zeros((len(items), n))
        problems = Problems()
        for i, item in enumerate(items):
            where = pointer(base, i)
            if key == "records":
                if not isinstance(item, dict):
                    problems.add(f"expected an object of features, got {json_type(item)}", pointer=where)
                    continue
                for name, j in self.index.items():
                    if name in item:
                        matrix[i, j] = self._cell(j, item[name], pointer(where, name), problems)
                    else:
                        problems.add("missing feature", pointer=pointer(where, name))
                for name in item:
                    if name not in self.index:
                        problems.add(
                            f"unknown feature (features: {', '.join(self.features)})",
                            pointer=pointer(where, name),
                        )
            elif not isinstance(item, list) or len(item) != n:
                got = f"{len(item)} values" if isinstance(item, list) else json_type(item)
                what = "values" if self.categories else "numbers"
                problems.add(
                    f"expected an array of {n} {what} ({', '.join(self.features)}), got {got}", pointer=where
                )
            else:
                for j, value in enumerate(item):
                    matrix[i, j] = self._cell(j, value, pointer(where, j), problems)
        problems.check()
        return matrix

    def _is_header(self, cells: list[str]) -> bool:
        """Any cell that is neither a number nor a category name makes the first row a header."""
        return not all(_is_float(c) or c in self.category_names for c in cells)

    def _from_csv(self, text: str) -> npt.NDArray[Any]:
        """CSV with an optional header row; ``row`` in errors counts lines as a spreadsheet does."""
        reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
        try:
            lines = [
                (reader.line_num, [c.strip() for c in row]) for row in reader if any(c.strip() for c in row)
            ]
        except csv.Error as exc:
            raise RequestError(
                f"malformed CSV at row {reader.line_num}: {exc}",
                errors=[{"row": reader.line_num, "message": str(exc)}],
            ) from None
        if not lines:
            raise RequestError("the CSV has no rows", errors=[{"row": 1, "message": "no rows"}])
        problems = Problems()
        columns = list(range(len(self.features)))  # CSV column of each feature
        names = list(self.features)
        first_line, first = lines[0]
        if self._is_header(first):  # a header row: columns are matched by name
            lines = lines[1:]
            columns = [first.index(name) if name in first else -1 for name in self.features]
            names = first
            for name, col in zip(self.features, columns, strict=True):
                if col < 0:
                    problems.add("missing column", row=first_line, column=name)
            for cell in first:
                if cell not in self.index:
                    problems.add(
                        f"unknown column (features: {', '.join(self.features)})", row=first_line, column=cell
                    )
            for cell in sorted({c for c in first if first.count(c) > 1}):
                problems.add("column appears more than once", row=first_line, column=cell)
            problems.check()
            if not lines:
                raise RequestError(
                    "the CSV has a header but no data rows",
                    errors=[{"row": first_line, "message": "no data rows"}],
                )
        width = len(names)
        matrix = np.zeros((len(lines), len(self.features)))
        for i, (line, cells) in enumerate(lines):
            if len(cells) != width:
                problems.add(f"expected {width} values ({', '.join(names)}), got {len(cells)}", row=line)
                continue
            for j, col in enumerate(columns):
                cell = cells[col]
                if j in self.categories:
                    matrix[i, j] = self._category(j, cell, problems, row=line, column=self.features[j])
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    problems.add(
                        f"{cell!r} is not a number" if cell else "empty value",
                        row=line,
                        column=self.features[j],
                    )
                    continue
                if not math.isfinite(value):
                    problems.add(
                        "must be a finite number (no NaN or infinity)", row=line, column=self.features[j]
                    )
                matrix[i, j] = value
        problems.check()
        return matrix


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- image


class ImageRun:
    """Encoded image bytes -> the model's tensor: decode, flatten alpha, convert, resize, normalize."""

    def __init__(self, params: ImageParams, input_name: str, formats: tuple[str, ...]) -> None:
        from PIL import Image as PILImage

        PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own guard, for any decode path
        self.pil = PILImage
        self.p = params
        self.input_name = input_name
        self.formats = [f.upper() for f in formats]
        self.dtype = np.dtype(params.dtype)
        channels = 3 if params.mode == "RGB" else 1
        self.mean = (
            None if params.mean is None else np.asarray(params.mean, self.dtype).reshape(1, 1, channels)
        )
        self.std = None if params.std is None else np.asarray(params.std, self.dtype).reshape(1, 1, channels)

    def __call__(self, data: bytes, inv: Invocation | None = None) -> dict[str, npt.NDArray[Any]]:
        source = self._decode(data)
        fitted, geometry = self._resize(source.convert(self.p.mode))
        if inv is not None:
            inv.image, inv.geometry = source, geometry
        pixels = np.asarray(fitted, dtype=self.dtype)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        p = self.p
        if p.invert:
            pixels = 255 - pixels
        pixels = pixels * self.dtype.type(p.scale)
        if self.mean is not None:
            pixels = pixels - self.mean
        if self.std is not None:
            pixels = pixels / self.std
        if p.layout == "NCHW":
            tensor = pixels.transpose(2, 0, 1)[None]
        elif p.layout == "NHWC":
            tensor = pixels[None]
        else:
            tensor = pixels.reshape(1, -1)
        return {self.input_name: np.ascontiguousarray(tensor, dtype=self.dtype)}

    def _decode(self, data: bytes) -> Any:
        """The request's image, EXIF-rotated, transparency flattened onto white (mode not converted)."""
        pil = self.pil
        from PIL import ImageOps

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pil.DecompressionBombWarning)
                img = pil.open(io.BytesIO(data), formats=self.formats)
                width, height = img.size
                if width * height > MAX_PIXELS:
                    limit = MAX_PIXELS // 1_000_000
                    raise invalid(
                        f"image too large: {width}x{height} pixels, the limit is {limit} megapixels"
                    )
                ImageOps.exif_transpose(img, in_place=True)  # phone pictures: sideways + an EXIF rotation
            if "A" in img.getbands() or "transparency" in img.info:
                # Transparent pixels carry arbitrary colour; flatten them onto white paper, as they appear.
                rgba = img.convert("RGBA")
                img = pil.alpha_composite(pil.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            img.load()
            return img
        except (pil.DecompressionBombError, pil.DecompressionBombWarning) as exc:
            size = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow names the size it refused
            what = f"{int(size.group(1)) / 1e6:g} megapixels, " if size else ""
            raise invalid(
                f"image too large: {what}the limit is {MAX_PIXELS // 1_000_000} megapixels"
            ) from None
        except pil.UnidentifiedImageError:
            raise invalid(f"the body is not an image this model takes ({', '.join(self.formats)})") from None
        except RequestError:
            raise
        except Exception as exc:  # truncated or corrupt data: Pillow's decoders raise many types
            raise invalid(f"the image could not be decoded: {' '.join(str(exc).split())[:200]}") from None

    def _resize(self, img: Any) -> tuple[Any, Geometry]:
        from PIL import ImageOps

        height, width = self.p.size
        geometry = Geometry(img.width, img.height, width, height)
        if img.size == (width, height):
            return img, geometry
        # BOX averages every source pixel when shrinking (no aliasing); BICUBIC interpolates when growing.
        shrink = img.width >= width and img.height >= height
        resample = self.pil.Resampling.BOX if shrink else self.pil.Resampling.BICUBIC
        if self.p.resize == "stretch":
            scaled = replace(geometry, scale_x=width / img.width, scale_y=height / img.height)
            return img.resize((width, height), resample=resample), scaled
        if self.p.resize == "crop":
            fitted = ImageOps.fit(img, (width, height), method=resample)
            # The crop box ImageOps.fit resizes (centred, of the model's aspect ratio).
            ratio = width / height
            crop_w, crop_h = (
                (img.height * ratio, img.height)
                if img.width / img.height >= ratio
                else (
                    img.width,
                    img.width / ratio,
                )
            )
            left, top = (img.width - crop_w) / 2, (img.height - crop_h) / 2
            scaled = replace(geometry, scale_x=width / crop_w, scale_y=height / crop_h, src_x=left, src_y=top)
            return fitted, scaled
        # Letterbox bars are background: white paper when the step inverts dark ink, else black.
        fill = 255 if self.p.invert else 0
        color = fill if img.mode == "L" else (fill, fill, fill)
        inner = ImageOps.contain(img, (width, height), method=resample)  # as ImageOps.pad does
        dst_x, dst_y = round((width - inner.width) * 0.5), round((height - inner.height) * 0.5)
        padded = self.pil.new(img.mode, (width, height), color)
        padded.paste(inner, (dst_x, dst_y))
        scaled = replace(
            geometry,
            scale_x=inner.width / img.width,
            scale_y=inner.height / img.height,
            dst_x=dst_x,
            dst_y=dst_y,
        )
        return padded, scaled


# --------------------------------------------------------------------------- text and scale


_SPACE = re.compile(r"\s+")


class TextRun:
    """A JSON object's string property, cleaned: Unicode normalization, control and zero-width
    characters removed, white space collapsed and stripped, lowercased; then its length is checked
    (or cut, with ``truncate``). Problems are 400s pointing at the property."""

    def __init__(self, step: TextStep, field: str, low: int, high: int | None) -> None:
        self.p = step.params
        self.field = field
        self.low = low
        self.high = high

    def clean(self, text: str) -> str:
        p = self.p
        if p.normalize != "none":
            text = unicodedata.normalize(p.normalize, text)
        if p.remove_control:
            text = "".join(
                " " if ch in "\t\n\r\v\f" else ch
                for ch in text
                if ch in "\t\n\r\v\f" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
            )
        if p.collapse_whitespace:
            text = _SPACE.sub(" ", text)
        if p.strip:
            text = text.strip()
        if p.lowercase:
            text = text.lower()
        return text

    def __call__(self, doc: Any, inv: Invocation | None = None) -> Any:
        if not isinstance(doc, dict):
            raise invalid(f"expected a JSON object with {self.field!r}, got {json_type(doc)}")
        if self.field not in doc:
            return doc  # an optional property, left out
        where = pointer("", self.field)
        value = doc[self.field]
        if not isinstance(value, str):
            raise invalid(f"expected string, got {json_type(value)}", where)
        text = self.clean(value)
        if len(text) < self.low:
            what = "is empty" if not text else f"is {len(text)} character(s) long"
            raise invalid(f"{what} after cleaning; at least {self.low} character(s) are needed", where)
        if self.high is not None and len(text) > self.high:
            if not self.p.truncate:
                raise invalid(f"is longer than {self.high} characters after cleaning ({len(text)})", where)
            text = text[: self.high].rstrip() if self.p.strip else text[: self.high]
        return {**doc, self.field: text}


class ScaleRun:
    """``(x - mean) / std`` over the last axis of the one tensor, in its dtype."""

    def __init__(self, name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.name = name
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    def __call__(self, tensors: Mapping[str, Any], inv: Invocation | None = None) -> dict[str, Any]:
        x = np.asarray(tensors[self.name])
        if x.shape[-1:] != self.mean.shape:
            raise invalid(f"expected {len(self.mean)} features to standardize, got shape {list(x.shape)}")
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = ((x - self.mean) / self.std).astype(x.dtype, copy=False)
        if not np.all(np.isfinite(scaled)):
            raise invalid(f"values are too large to standardize in {x.dtype} (they overflow to infinity)")
        return {**tensors, self.name: scaled}


# --------------------------------------------------------------------------- post steps


class LabelsRun:
    """Class scores -> per row, the ``top_k`` best ``(label, score)``; scores as the model gives them."""

    def __init__(self, scores: str, labels: tuple[str, ...], top_k: int) -> None:
        self.scores = scores
        self.labels = labels
        self.top_k = top_k

    def __call__(self, outputs: Mapping[str, Any], inv: Invocation | None = None) -> LabelRows:
        scores = np.asarray(outputs[self.scores], dtype=np.float64)
        n = len(self.labels)
        if scores.ndim == 1 and n == 2:  # one probability per row: P(second class)
            scores = np.stack([1 - scores, scores], axis=1)
        elif scores.ndim == 1:
            scores = scores.reshape(-1, 1)
        if scores.ndim != 2 or scores.shape[1] != n:
            raise ValueError(
                f"output {self.scores!r} has shape {list(scores.shape)}, expected [batch, {n}] for {n} labels"
            )
        order = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
        return [
            [(self.labels[j], float(row[j])) for j in best] for row, best in zip(scores, order, strict=True)
        ]


class SoftmaxRun:
    """Logits -> probabilities over the last axis (``exp(x / T)`` normalized), in the output's dtype."""

    def __init__(self, name: str, temperature: float) -> None:
        self.name = name
        self.temperature = temperature

    def __call__(self, outputs: Mapping[str, Any], inv: Invocation | None = None) -> dict[str, Any]:
        logits = np.asarray(outputs[self.name])
        x = logits.astype(np.float64) / self.temperature
        if not np.all(np.isfinite(x)):
            raise ValueError(f"output {self.name!r} holds NaN or infinity")
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        probabilities = e / e.sum(axis=-1, keepdims=True)
        return {**outputs, self.name: probabilities.astype(logits.dtype, copy=False)}


class ThresholdRun:
    """Binary scores -> per row ``[(label, score)]``: the second label when P(second) >= threshold,
    with the probability of the label decided (P or 1 - P)."""

    def __init__(self, name: str, labels: tuple[str, ...], threshold: float) -> None:
        self.name = name
        self.negative, self.positive = labels
        self.threshold = threshold

    def __call__(self, outputs: Mapping[str, Any], inv: Invocation | None = None) -> LabelRows:
        scores = np.asarray(outputs[self.name], dtype=np.float64)
        if scores.ndim == 2 and scores.shape[1] == 2:
            negative, positive = scores[:, 0], scores[:, 1]
        elif scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1):
            positive = scores.reshape(-1)
            negative = 1 - positive
        else:
            raise ValueError(f"output {self.name!r} has shape {list(scores.shape)}, expected [batch, 1 or 2]")
        return [
            [(self.positive, float(p))] if p >= self.threshold else [(self.negative, float(n))]
            for n, p in zip(negative, positive, strict=True)
        ]


class RegressionRun:
    """One prediction per row -> ``[{prediction, unit}]``, rounded to ``decimals``."""

    def __init__(self, name: str, decimals: int | None, unit: str | None) -> None:
        self.name = name
        self.decimals = decimals
        self.unit = unit

    def __call__(self, outputs: Mapping[str, Any], inv: Invocation | None = None) -> list[dict[str, Any]]:
        values = np.asarray(outputs[self.name], dtype=np.float64)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ValueError(f"output {self.name!r} has shape {list(values.shape)}, expected [batch]")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"output {self.name!r} holds NaN or infinity")
        unit = {} if self.unit is None else {"unit": self.unit}
        digits = self.decimals
        # Python's round is correctly rounded in decimal (numpy's scales by 10**n first: 2.675 -> 2.68).
        return [
            {"prediction": float(v) if digits is None else round(float(v), digits), **unit} for v in values
        ]


def predictions_of(value: Any, name: str | None) -> npt.NDArray[np.float64]:
    """The per-row numbers of a regression result or of output ``name``."""
    rows = [row["prediction"] for row in value] if name is None else value[name]
    predictions: npt.NDArray[np.float64] = np.asarray(rows, dtype=np.float64).reshape(-1)
    return predictions


def _iou(box: npt.NDArray[np.float64], others: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    iou: npt.NDArray[np.float64] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def nms(
    boxes: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    classes: npt.NDArray[np.int64],
    iou: float,
) -> list[int]:
    """Greedy non-maximum suppression per class: indices kept, best score first (ties: first index)."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    for rank, i in enumerate(order):
        if suppressed[i]:
            continue
        kept.append(int(i))
        rest = order[rank + 1 :]
        rest = rest[(~suppressed[rest]) & (classes[rest] == classes[i])]
        if len(rest):
            suppressed[rest[_iou(boxes[i], boxes[rest]) > iou]] = True
    return kept


class BoxesRun:
    """Detector outputs -> per image ``[{box: [x1, y1, x2, y2], label, score}]`` best first: decoded to
    corners, scaled when normalized, thresholded, suppressed per class, capped, and mapped back to the
    request image's pixels through the image step's resize (when the request is an image)."""

    def __init__(self, plan: BoxesPlan, params: BoxesParams, labels: tuple[str, ...] | None) -> None:
        self.plan = plan
        self.p = params
        self.labels = labels

    def _batch(self, outputs: Mapping[str, Any]) -> list[tuple[Any, Any, Any]]:
        """Per image: boxes [N, 4] (as given), scores [N], class indices [N]. Outputs without a batch
        axis ([N, 4], [N], [N, classes]) are one image."""
        plan = self.plan
        raw = np.asarray(outputs[plan.boxes], dtype=np.float64)
        batched = raw.ndim == 3
        if not batched:
            raw = raw[None]
        if raw.ndim != 3:
            raise ValueError(f"output {plan.boxes!r} has shape {list(raw.shape)}, expected [batch, N, 4+]")
        if plan.scores is None:  # combined: [B, N, 4 + classes]
            if raw.shape[2] < 5:
                raise ValueError(
                    f"output {plan.boxes!r} has shape {list(raw.shape)}, expected [.., N, 4 + classes]"
                )
            boxes, tail = raw[:, :, :4], raw[:, :, 4:]
            if tail.shape[2] == 1:
                return [(b, t[:, 0], np.zeros(len(t), np.int64)) for b, t in zip(boxes, tail, strict=True)]
            return [(b, t.max(axis=1), t.argmax(axis=1)) for b, t in zip(boxes, tail, strict=True)]
        if raw.shape[2] != 4:
            raise ValueError(f"output {plan.boxes!r} has shape {list(raw.shape)}, expected [.., N, 4]")
        scores = np.asarray(outputs[plan.scores], dtype=np.float64)
        scores = scores if batched else scores[None]
        classes = None
        if plan.classes is not None:
            classes = np.asarray(outputs[plan.classes]).astype(np.int64)
            classes = classes if batched else classes[None]
        if scores.shape[0] != raw.shape[0] or (classes is not None and classes.shape[0] != raw.shape[0]):
            raise ValueError(f"{raw.shape[0]} images of boxes but scores or classes for another number")
        out = []
        for i, b in enumerate(raw):
            s = scores[i]
            if s.ndim == 2:  # per-class scores
                best, cls = s.max(axis=1), s.argmax(axis=1)
            else:
                best = s.reshape(-1)
                cls = classes[i].reshape(-1) if classes is not None else np.zeros(len(best), np.int64)
            if not len(best) == len(cls) == len(b):
                raise ValueError(f"{len(b)} boxes but {len(best)} scores and {len(cls)} classes")
            out.append((b, best, cls))
        return out

    def _corners(self, boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.p.format == "xyxy":
            return boxes.copy()
        out = np.empty_like(boxes)
        if self.p.format == "xywh":
            out[:, :2] = boxes[:, :2]
            out[:, 2:] = boxes[:, :2] + boxes[:, 2:]
        else:  # cxcywh
            out[:, :2] = boxes[:, :2] - boxes[:, 2:] / 2
            out[:, 2:] = boxes[:, :2] + boxes[:, 2:] / 2
        return out

    def _label(self, index: int) -> str:
        if self.labels is None:
            return str(index)
        if not 0 <= index < len(self.labels):
            raise ValueError(f"class index {index} is out of range for {len(self.labels)} labels")
        return self.labels[index]

    def __call__(
        self, outputs: Mapping[str, Any], inv: Invocation | None = None
    ) -> list[list[dict[str, Any]]]:
        geometry = inv.geometry if inv is not None else None
        rows = []
        for raw, scores, classes in self._batch(outputs):
            keep = np.flatnonzero(np.isfinite(scores) & (scores >= self.p.score_threshold))
            boxes = self._corners(raw[keep])
            scores, classes = scores[keep], classes[keep]
            finite = np.all(np.isfinite(boxes), axis=1)
            boxes, scores, classes = boxes[finite], scores[finite], classes[finite]
            if self.p.iou_threshold is not None:
                chosen = nms(boxes, scores, classes, self.p.iou_threshold)
            else:
                chosen = [int(i) for i in np.argsort(-scores, kind="stable")]
            chosen = chosen[: self.p.max_detections]
            boxes, scores, classes = boxes[chosen], scores[chosen], classes[chosen]
            if self.p.normalized and geometry is not None:
                boxes = boxes * np.asarray([geometry.model_width, geometry.model_height] * 2, np.float64)
            if geometry is not None:
                boxes = geometry.to_source(boxes)
            rows.append(
                [
                    {
                        "box": [round(float(c), 2) for c in box],
                        "label": self._label(int(cls)),
                        "score": float(score),
                    }
                    for box, score, cls in zip(boxes, scores, classes, strict=True)
                ]
            )
        return rows


# --------------------------------------------------------------------------- user steps


def _user_function(model_dir: Path, ref: str) -> Callable[[Any], Any]:
    rel, _, name = ref.partition(":")
    fn = getattr(import_user_file(model_dir, rel), name, None)
    if not callable(fn):
        raise ModelLoadError(f"user step {ref}: {rel} defines no function {name}")
    return fn  # type: ignore[no-any-return]


class UserRun:
    """A user function with its annotations enforced: it receives labels and boxes in their response
    form (``[{label, score}]``), one ``ndarray`` when it takes one, and what it returns is checked
    against its return type (a mismatch is the step's failure, a 502 naming it)."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        upstream: Value,
        accepts: UserType | None,
        returns: UserType | None,
        names: tuple[str, ...],
    ) -> None:
        self.fn = fn
        self.labels_in = isinstance(upstream, Labels)
        self.one_in = accepts is not None and accepts.kind == "tensor"
        self.returns = returns
        self.names = names  # the tensors a tensor-typed return is named like

    def __call__(self, value: Any, inv: Invocation | None = None) -> Any:
        if self.labels_in:
            value = [[{"label": label, "score": score} for label, score in row] for row in value]
        elif self.one_in:
            (value,) = value.values()
        result = self.fn(value)
        kind = self.returns.kind if self.returns is not None else None
        if kind == "json":
            assert self.returns is not None
            problems = Problems()
            result = check_schema(to_jsonable(result), self.returns.json_schema, "", problems)
            if problems:
                item = problems.items[0]
                raise TypeError(
                    "returned a value that does not match its return type: "
                    f"{item['pointer'] or '/'}: {item['message']}"
                )
        elif kind == "tensor":
            result = {self.names[0]: np.asarray(result)}
        elif kind == "tensors":
            if not isinstance(result, Mapping):
                raise TypeError(f"returned {type(result).__name__}, not a dict of arrays")
            missing = [n for n in self.names if n not in result]
            if missing:
                raise TypeError(f"returned no {', '.join(map(repr, missing))}")
        return result


# --------------------------------------------------------------------------- the chain


def _bind(
    step: Step, ref: StepRef, upstream: Value, ctx: StepContext, manifest: ModelConfigFile, model_dir: Path
) -> RunStep:
    if isinstance(step, UserStep):
        sig = step.signature(ctx)
        produced = step.apply(upstream, ctx)
        names = tuple(t.name for t in produced.tensors) if isinstance(produced, Tensors) else ()
        fn = _user_function(model_dir, ref.step)
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
