"""The runtime side of the processing steps: what each step does to real data.

The control plane knows a step by its protocol transform (``core/steps.py``); here the same chain is
replayed once at init (``build_steps``) to learn each step's concrete arguments - the feature order, the
model input's name and dtype, which output holds the class scores - so a request only runs array code.
Built-in pre steps raise ``RequestError`` for anything the client sent wrong; every other failure in a
user step or a post step is the model's (the handler answers 502 naming the step).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from chalicelib.core.config import StepRef
from chalicelib.core.manifest import ModelConfigFile
from chalicelib.core.protocol import EncodedImage, Figure, Labels, Records, Tensors, Value
from chalicelib.core.steps import (
    BarChart,
    Image,
    ImageParams,
    LabelsStep,
    Step,
    StepContext,
    Tabular,
    UserStep,
    _scores_tensor,
)
from chalicelib.runtime.codecs import Problems, RequestError, invalid, json_type, object_with, pointer
from chalicelib.runtime.loaders import ModelLoadError, import_user_file

MAX_PIXELS = 40_000_000
"""Images above this many pixels are refused before decoding: 40 MP of RGB is 120 MB of memory."""
MAX_BARS = 20
"""More bars than this do not fit 360 pixels of chart legibly."""

LabelRows = list[list[tuple[str, float]]]
"""Per request row, ``(label, score)`` best first."""


@dataclass(frozen=True)
class Table:
    """A records request before the tabular step: a parsed JSON body, or CSV text."""

    json: Any = None
    csv: str | None = None


@dataclass(frozen=True)
class FigureValue:
    """A rendered chart travelling with the value it pictures."""

    data: Any
    png: bytes


@dataclass(frozen=True)
class RunStep:
    """One step bound to its arguments. ``contained``: its failures are the model's or user code's
    (502 naming ``stage``) rather than the runtime's."""

    stage: str
    run: Callable[[Any], Any]
    contained: bool


# --------------------------------------------------------------------------- tabular


def _number(value: Any, where: str, problems: Problems) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(f"expected a number, got {json_type(value)}", pointer=where)
        return 0.0
    if not math.isfinite(value):
        problems.add("must be a finite number (no NaN or infinity)", pointer=where)
        return 0.0
    return float(value)


class TabularRun:
    """Records, rows or CSV -> one float matrix in the model's feature order."""

    def __init__(self, features: tuple[str, ...], input_name: str, dtype: npt.DTypeLike) -> None:
        self.features = features
        self.index = {name: j for j, name in enumerate(features)}
        self.input_name = input_name
        self.dtype = np.dtype(dtype)

    def __call__(self, table: Table) -> dict[str, npt.NDArray[Any]]:
        matrix = self._from_csv(table.csv) if table.csv is not None else self._from_json(table.json)
        return {self.input_name: matrix.astype(self.dtype, copy=False)}

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
                        matrix[i, j] = _number(item[name], pointer(where, name), problems)
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
                problems.add(
                    f"expected an array of {n} numbers ({', '.join(self.features)}), got {got}", pointer=where
                )
            else:
                for j, value in enumerate(item):
                    matrix[i, j] = _number(value, pointer(where, j), problems)
        problems.check()
        return matrix

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
        if not all(_is_float(cell) for cell in first):  # a header row: columns are matched by name
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

    def __call__(self, data: bytes) -> dict[str, npt.NDArray[Any]]:
        img = self._decode(data)
        pixels = np.asarray(self._resize(img), dtype=self.dtype)
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
            return img.convert(self.p.mode)
        except (pil.DecompressionBombError, pil.DecompressionBombWarning):
            raise invalid(f"image too large: the limit is {MAX_PIXELS // 1_000_000} megapixels") from None
        except pil.UnidentifiedImageError:
            raise invalid(f"the body is not an image this model takes ({', '.join(self.formats)})") from None
        except RequestError:
            raise
        except Exception as exc:  # truncated or corrupt data: Pillow's decoders raise many types
            raise invalid(f"the image could not be decoded: {' '.join(str(exc).split())[:200]}") from None

    def _resize(self, img: Any) -> Any:
        from PIL import ImageOps

        height, width = self.p.size
        if img.size == (width, height):
            return img
        # BOX averages every source pixel when shrinking (no aliasing); BICUBIC interpolates when growing.
        shrink = img.width >= width and img.height >= height
        resample = self.pil.Resampling.BOX if shrink else self.pil.Resampling.BICUBIC
        if self.p.resize == "stretch":
            return img.resize((width, height), resample=resample)
        if self.p.resize == "crop":
            return ImageOps.fit(img, (width, height), method=resample)
        # Letterbox bars are background: white paper when the step inverts dark ink, else black.
        fill = 255 if self.p.invert else 0
        color = fill if img.mode == "L" else (fill, fill, fill)
        return ImageOps.pad(img, (width, height), method=resample, color=color)


# --------------------------------------------------------------------------- labels and charts


class LabelsRun:
    """Class scores -> per row, the ``top_k`` best ``(label, score)``; scores as the model gives them."""

    def __init__(self, scores: str, labels: tuple[str, ...], top_k: int) -> None:
        self.scores = scores
        self.labels = labels
        self.top_k = top_k

    def __call__(self, outputs: Mapping[str, Any]) -> LabelRows:
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


class BarChartRun:
    """Labelled scores -> the same scores plus a PNG bar chart of the first row.

    Deterministic (fixed size, font and margins; the PNG is written without metadata), so equal scores
    give equal bytes. Fast: matplotlib (Agg, object API, no pyplot state) draws the frame - axes, ticks,
    axis label, title - once per x range and title, and draws each label name, each value text and a
    full-range bar once into pixel patches, always at the same canonical place so the pixels never depend
    on which requests came before. A request only pastes patches (blitting): a few ms, most of it PNG
    compression, instead of about 60 ms for a fresh figure.
    """

    RC: ClassVar[dict[str, Any]] = {
        "font.family": "DejaVu Sans",
        "font.size": 10,
        "text.parse_math": False,  # labels are user text: "$" must not start mathtext
        "svg.hashsalt": "modelport",
    }
    MAX_PATCHES = 4096
    """Rendered strings kept; logits give unbounded value strings."""

    def __init__(self, title: str, names: tuple[str, ...], bars: int, labels: LabelsRun | None) -> None:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.transforms import IdentityTransform
        from PIL import Image as PILImage

        self.matplotlib: Any = matplotlib  # typed Any: rc_context insists on literal keys
        self.pil = PILImage
        self.title = title
        self.labels = labels
        self.bars = max(1, min(bars, MAX_BARS))
        with self.matplotlib.rc_context(self.RC):
            self.figure = Figure(figsize=(6.4, 3.6), dpi=100)
            self.canvas: Any = FigureCanvasAgg(self.figure)  # Any: the blitting API is untyped
            left = min(0.45, 0.05 + 0.011 * max(len(_short(n)) for n in names))
            ax = self.ax = self.figure.add_axes((left, 0.15, 0.95 - left, 0.72))
            ax.set_ylim(self.bars - 0.5, -0.5)  # row 0, the best class, on top
            ax.set_yticks([])
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
            self.bar = ax.barh([0], [1.0], color="#4878a8", height=0.6)[0]
            name_at: dict[str, Any] = {"transform": ax.get_yaxis_transform(), "clip_on": False}
            self.name = ax.text(-0.015, 0, "", ha="right", va="center", **name_at)
            self.value = ax.text(0, 0, "", va="center", fontsize=9, transform=IdentityTransform())
            self.heading = ax.set_title("", fontsize=11)
            for artist in (self.bar, self.name, self.value):
                artist.set_animated(True)  # never part of the frame; drawn only into patches
        to_pixels = ax.transData.transform
        self.row0 = float(to_pixels((0, 0))[1])  # display y (from the bottom) of row 0's centre
        self.row_height = self.row0 - float(to_pixels((0, 1))[1])
        self.canonical_x = float(to_pixels((0, 0))[0]) + 200.0  # where value patches are drawn
        self.frame: tuple[tuple[float, float, str], Any, Any] | None = None
        self.patches: dict[tuple[str, str], tuple[Any, int, int]] = {}

    def __call__(self, value: Any) -> FigureValue:
        rows: LabelRows = self.labels(value) if self.labels is not None else value
        title = self.title if len(rows) <= 1 else f"{self.title} (row 1 of {len(rows)})"
        return FigureValue(data=rows, png=self.render(rows[0] if rows else [], title))

    def render(self, row: list[tuple[str, float]], title: str) -> bytes:
        row = row[: self.bars]
        # Scores are shown as the model gives them: probabilities on 0..1, anything else on its range.
        lo = min([0.0, *(s for _, s in row)])
        hi = max([1.0, *(s for _, s in row)])
        background, bar = self._frame(lo, hi, title)
        pad = 0.01 * (hi - lo)
        plan = []
        for label, score in row:
            inside = score - lo > 0.8 * (hi - lo)  # a long bar carries its value inside, in white
            at = score - pad if inside else max(score, 0.0) + pad
            plan.append(
                (self._patch("name", label), self._patch("in" if inside else "out", f"{score:.3f}"), at)
            )
        self.canvas.restore_region(background)
        (bx1, by1, bx2, by2) = bar.get_extents()
        for i, ((_, score), (name, value, at)) in enumerate(zip(row, plan, strict=True)):
            shift = round(self.row_height * i)
            a, b = sorted((self._x(0.0), self._x(score)))
            if b > a:  # the part of the full-range bar between 0 and the score
                crop = (max(a, bx1), by1, min(b, bx2), by2)
                self.canvas.restore_region(bar, bbox=crop, xy=(bx1, by1 + shift))
            region, x, top = name
            self.canvas.restore_region(region, xy=(x, top + shift))
            region, dx, top = value
            self.canvas.restore_region(region, xy=(self._x(at) + dx, top + shift))
        image = self.pil.frombuffer("RGBA", self.canvas.get_width_height(), self.canvas.buffer_rgba())
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG", compress_level=3)  # 2x faster than 6, 15% larger
        return buf.getvalue()

    def _x(self, value: float) -> int:
        return round(float(self.ax.transData.transform((value, 0))[0]))

    def _frame(self, lo: float, hi: float, title: str) -> tuple[Any, Any]:
        """The cached background for this x range and title, and a full-range bar of row 0."""
        key = (lo, hi, title)
        if self.frame is None or self.frame[0] != key:
            with self.matplotlib.rc_context(self.RC):  # ticks are made while drawing: they read rcParams
                self.ax.set_xlim(lo, hi)
                self.ax.set_xlabel("probability" if (lo, hi) == (0.0, 1.0) else "score")
                self.heading.set_text(title)
                self.canvas.draw()
            background = self.canvas.copy_from_bbox(self.figure.bbox)
            self.bar.set_x(lo)
            self.bar.set_width(hi - lo)
            self.ax.draw_artist(self.bar)
            bar = self.canvas.copy_from_bbox(self.bar.get_window_extent(self.canvas.get_renderer()))
            self.frame = (key, background, bar)
        return self.frame[1], self.frame[2]

    def _patch(self, kind: str, text: str) -> tuple[Any, int, int]:
        """``text`` rendered once as (pixels, x offset, top) for row 0: a label name left of the bars,
        or a value ``out``side a bar (black on white) or ``in``side one (white on the bar's colour).
        Names sit at a fixed x; a value's x offset is relative to its anchor."""
        cached = self.patches.get((kind, text))
        if cached is not None:
            return cached
        if len(self.patches) >= self.MAX_PATCHES:
            self.patches.clear()
        assert self.frame is not None
        self.canvas.restore_region(self.frame[1])
        if kind == "name":
            artist, anchor = self.name, 0
            artist.set_text(_short(text))
        else:
            artist, anchor = self.value, round(self.canonical_x)
            inside = kind == "in"
            if inside:
                self.ax.draw_artist(self.bar)  # the full-range bar of the current frame
            artist.set_text(text)
            artist.set_position((anchor, self.row0))
            artist.set_horizontalalignment("right" if inside else "left")
            artist.set_color("white" if inside else "black")
        self.ax.draw_artist(artist)
        region = self.canvas.copy_from_bbox(artist.get_window_extent(self.canvas.get_renderer()))
        x1, y1, _, _ = region.get_extents()
        cached = self.patches[(kind, text)] = (region, x1 - anchor, y1)
        return cached


def _short(label: str, limit: int = 32) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


# --------------------------------------------------------------------------- the chain


def _user_function(model_dir: Path, ref: str) -> Callable[[Any], Any]:
    rel, _, name = ref.partition(":")
    fn = getattr(import_user_file(model_dir, rel), name, None)
    if not callable(fn):
        raise ModelLoadError(f"user step {ref}: {rel} defines no function {name}")
    return fn  # type: ignore[no-any-return]


def _bind(
    step: Step, ref: StepRef, upstream: Value, ctx: StepContext, manifest: ModelConfigFile, model_dir: Path
) -> RunStep:
    if isinstance(step, UserStep):
        return RunStep(f"{step.stage_of}:{ref.step}", _user_function(model_dir, ref.step), contained=True)
    produced = step.apply(upstream, ctx)
    stage = f"{step.stage}:{step.name}"
    if isinstance(step, Tabular):
        assert isinstance(upstream, Records) and isinstance(produced, Tensors)
        target = produced.tensors[0]
        dtype = np.float32 if target.datatype == "FP32" else np.float64
        return RunStep(
            stage, TabularRun(tuple(f.name for f in upstream.features), target.name, dtype), contained=False
        )
    if isinstance(step, Image):
        assert isinstance(upstream, EncodedImage) and isinstance(produced, Tensors)
        return RunStep(
            stage, ImageRun(step.params, produced.tensors[0].name, upstream.formats), contained=False
        )
    if isinstance(step, BarChart):
        assert isinstance(produced, Figure) and isinstance(produced.data, Labels)
        data = produced.data  # the upstream labels, or the ones the chart computes from scores
        labels = None
        if not isinstance(upstream, Labels):
            scores = _scores_tensor(upstream, step.name, step.params.output)
            labels = LabelsRun(scores.name, data.labels, data.top_k)
        bars = min(step.params.top_k or data.top_k, data.top_k)
        run = BarChartRun(step.params.title or manifest.name, data.labels, bars, labels)
        return RunStep(stage, run, contained=True)
    if isinstance(step, LabelsStep):
        assert isinstance(produced, Labels)
        scores = _scores_tensor(upstream, step.name, step.params.output)
        return RunStep(stage, LabelsRun(scores.name, produced.labels, produced.top_k), contained=True)
    raise ModelLoadError(f"step {step.name} has no runtime")  # pragma: no cover - every built-in has one


def build_steps(manifest: ModelConfigFile, model_dir: Path) -> tuple[list[RunStep], list[RunStep]]:
    """Replay the manifest's chain (as ``core/chain.py`` resolved it) and bind each step's arguments."""
    native = manifest.native
    labels = manifest.labels
    if labels is None and native.classes is not None:
        labels = tuple(str(c) for c in native.classes)
    ctx = StepContext(native=native, labels=labels)
    pre: list[RunStep] = []
    value: Value = manifest.protocol.request_value
    for ref in manifest.processing.pre:
        step = ref.bind("pre")
        pre.append(_bind(step, ref, value, ctx, manifest, model_dir))
        value = step.apply(value, ctx)
    post: list[RunStep] = []
    value = native.outputs
    for ref in manifest.processing.post:
        step = ref.bind("post")
        post.append(_bind(step, ref, value, ctx, manifest, model_dir))
        value = step.apply(value, ctx)
    return pre, post
