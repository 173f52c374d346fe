"""Charts at runtime: bar chart, line chart and scatter plot, heat map (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from chalicelib.core.steps.charts import BarChartArgs, FeatureChartArgs, HeatmapArgs
from chalicelib.runtime.steps.base import FigureValue, LabelRows, StepCall
from chalicelib.runtime.steps.drawing import RC, canvas_png, png_of, prepare_matplotlib, short
from chalicelib.runtime.steps.regression import predictions_of
from chalicelib.runtime.steps.scores import LabelsRun

MAX_BARS = 20
"""More bars than this do not fit 360 pixels of chart legibly."""
MAX_POINTS = 10_000
"""Points drawn in a line chart or scatter plot; a larger batch is drawn by its first rows."""
MAX_CELL_VALUES = 12
"""Cells per side up to which a heat map writes each value (more would overlap at a legible size)."""


def _number(value: float) -> str:
    """A value for a cell or a label: 3 significant digits, no exponent for everyday magnitudes."""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.{max(0, 2 - int(math.log10(abs(value))))}f}"
    return f"{value:.2e}"


class BarChartRun:
    """Labelled scores -> the same scores plus a PNG bar chart of the first row.

    Deterministic (fixed size, font and margins; the PNG is written without metadata), so equal scores
    give equal bytes. Fast: matplotlib (Agg, object API, no pyplot state) draws the frame - axes, ticks,
    axis label, title - once per x range and title, and draws each label name, each value text and a
    full-range bar once into pixel patches, always at the same canonical place so the pixels never depend
    on which requests came before. A request only pastes patches (blitting): a few ms, most of it PNG
    compression, instead of about 60 ms for a fresh figure.
    """

    RC: ClassVar[dict[str, Any]] = RC
    MAX_PATCHES = 4096
    """Rendered strings kept; logits give unbounded value strings."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> BarChartRun:
        """Built from the arguments the config file records (``BarChartArgs``)."""
        a = BarChartArgs.model_validate(args)
        s = a.scores
        labels = None if s is None else LabelsRun(s.scores, s.labels, s.top_k, s.keys)
        return cls(a.title, a.names, a.bars, labels)

    def __init__(self, title: str, names: tuple[str, ...], bars: int, labels: LabelsRun | None) -> None:
        prepare_matplotlib()
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
            left = min(0.45, 0.05 + 0.011 * max(len(short(n)) for n in names))
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

    def __call__(self, value: Any, inv: StepCall | None = None) -> FigureValue:
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
        return png_of(self.pil.frombuffer("RGBA", self.canvas.get_width_height(), self.canvas.buffer_rgba()))

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
            artist.set_text(short(text))
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


# --------------------------------------------------------------------------- line chart and scatter


class FeatureChartRun:
    """Predictions against one request feature across the rows of a batch: a line chart (points
    joined in x order) or a scatter plot, 640x400 pixels. One figure is kept and only its data, limits
    and title change per request (a fresh figure costs 3-4x more, most of it making tick artists);
    every property a request sets is set on every request, so the pixels depend on nothing earlier."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> FeatureChartRun:
        """Built from the arguments the config file records (``FeatureChartArgs``)."""
        a = FeatureChartArgs.model_validate(args)
        output = a.output

        def prediction(value: Any) -> npt.NDArray[np.float64]:
            return predictions_of(value, output)

        return cls(a.kind, a.title, a.feature, a.y_label, prediction)

    def __init__(
        self,
        kind: str,
        title: str,
        feature: str,
        y_label: str,
        prediction: Any,
    ) -> None:
        prepare_matplotlib()
        import matplotlib as mpl
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.matplotlib: Any = mpl  # typed Any: rc_context insists on literal keys
        self.kind = kind
        self.title = title
        self.feature = feature
        self.prediction = prediction  # value -> 1-D predictions
        with self.matplotlib.rc_context(RC):
            self.figure = Figure(figsize=(6.4, 4.0), dpi=100)
            self.canvas = FigureCanvasAgg(self.figure)
            ax = self.ax = self.figure.add_axes((0.12, 0.14, 0.83, 0.76))
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
            ax.grid(True, color="#dddddd", linewidth=0.8)
            ax.set_axisbelow(True)
            ax.set_xlabel(short(feature, 60))
            ax.set_ylabel(short(y_label, 60))
            self.line: Any = None
            self.points: Any = None
            if kind == "line_chart":
                (self.line,) = ax.plot([], [], color="#4878a8", linewidth=1.5, marker="o", markersize=4)
            else:
                self.points = ax.scatter(
                    np.empty(0),
                    np.empty(0),
                    s=22,
                    color="#4878a8",
                    alpha=0.8,
                    edgecolors="white",
                    linewidths=0.5,
                )
            self.heading = ax.set_title("", fontsize=11)

    def __call__(self, value: Any, inv: StepCall | None = None) -> FigureValue:
        y = np.asarray(self.prediction(value), dtype=np.float64).reshape(-1)
        if inv is None or inv.table is None:
            raise ValueError(f"{self.kind} needs the request's rows, which this invocation does not have")
        features, matrix = inv.table
        x = matrix[:, features.index(self.feature)]
        if len(x) != len(y):
            raise ValueError(f"{len(y)} predictions for {len(x)} request rows")
        return FigureValue(data=value, png=self.render(x, y))

    def render(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> bytes:
        n = len(x)
        x, y = x[:MAX_POINTS], y[:MAX_POINTS]
        if not np.all(np.isfinite(y)):
            raise ValueError("the predictions hold NaN or infinity, which a chart cannot place")
        rows = f"{n} row" + ("" if n == 1 else "s")
        if n > MAX_POINTS:
            rows = f"first {MAX_POINTS} of {n} rows"
        with self.matplotlib.rc_context(RC):  # ticks are made while drawing: they read rcParams
            if self.line is not None:
                order = np.argsort(x, kind="stable")
                self.line.set_data(x[order], y[order])
            else:
                self.points.set_offsets(np.column_stack([x, y]))
            self.ax.set_xlim(*_limits(x))
            self.ax.set_ylim(*_limits(y))
            self.heading.set_text(f"{self.title} ({rows})")
            return canvas_png(self.canvas)


def _limits(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = (hi - lo) * 0.06 if hi > lo else (abs(lo) * 0.05 or 1.0)
    return lo - pad, hi + pad


# --------------------------------------------------------------------------- heat map


class HeatmapRun:
    """A 2-D output - a mask, a probability grid (rows x classes) - as a heat map with a colour bar
    and, for grids up to 12x12, each value written in its cell. 640x480 pixels. The figure is kept
    while requests keep its layout (grid shape, class ticks, values shown); data, colour range, title
    and cell texts are set on every request."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> HeatmapRun:
        """Built from the arguments the config file records (``HeatmapArgs``)."""
        a = HeatmapArgs.model_validate(args)
        return cls(
            a.title, a.output, a.labels, a.shape, a.x_label, a.y_label, a.vmin, a.vmax, a.colormap, a.values
        )

    def __init__(
        self,
        title: str,
        output: str,
        labels: tuple[str, ...] | None,
        shape: tuple[int, int] | None,
        x_label: str | None,
        y_label: str | None,
        vmin: float | None,
        vmax: float | None,
        colormap: str,
        values: bool,
    ) -> None:
        prepare_matplotlib()
        import matplotlib as mpl
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from mpl_toolkits.axes_grid1 import make_axes_locatable  # type: ignore[import-untyped]

        self.figure_class = Figure
        self.canvas_class = FigureCanvasAgg
        self.divider = make_axes_locatable  # the colour bar hugs the image, whatever its aspect
        self.title = title
        self.output = output
        self.labels = labels
        self.shape = shape
        self.x_label = x_label
        self.y_label = y_label
        self.vmin = vmin
        self.vmax = vmax
        self.colormap = colormap
        self.values = values
        self.matplotlib: Any = mpl  # typed Any: rc_context insists on literal keys
        self.frame: _HeatmapFrame | None = None

    def grid(self, value: Mapping[str, Any]) -> tuple[npt.NDArray[np.float64], str]:
        """The 2-D array to draw and a note for the title (which row of a batch it shows)."""
        array = np.asarray(value[self.output])
        if array.dtype.kind not in "biuf":
            raise ValueError(f"output {self.output!r} is not numeric ({array.dtype})")
        grid = array.astype(np.float64)
        note = ""
        if self.shape is not None:
            rows, cols = self.shape
            batch = grid.reshape(-1, rows * cols) if grid.size % (rows * cols) == 0 else None
            if batch is None or batch.shape[0] == 0:
                raise ValueError(
                    f"output {self.output!r} of shape {list(array.shape)} is not [.., {rows * cols}]"
                )
            if batch.shape[0] > 1:
                note = f" (row 1 of {batch.shape[0]})"
            return batch[0].reshape(rows, cols), note
        while grid.ndim > 2 and grid.shape[0] == 1:
            grid = grid[0]
        if grid.ndim > 2:
            grid = grid.reshape([d for d in grid.shape if d != 1] or [1])
        if grid.ndim == 1:
            grid = grid.reshape(1, -1)
        if grid.ndim != 2 or grid.size == 0:
            raise ValueError(f"heatmap draws a 2-D output, {self.output!r} has shape {list(array.shape)}")
        return grid, note

    def __call__(self, value: Any, inv: StepCall | None = None) -> FigureValue:
        grid, note = self.grid(value)
        return FigureValue(data=value, png=self.render(grid, note))

    def render(self, grid: npt.NDArray[np.float64], note: str = "") -> bytes:
        if not np.all(np.isfinite(grid)):
            raise ValueError("the output holds NaN or infinity, which a heat map cannot colour")
        rows, cols = grid.shape
        lo, hi = float(grid.min()), float(grid.max())
        in_unit = lo >= 0.0 and hi <= 1.0
        vmin = self.vmin if self.vmin is not None else (0.0 if in_unit else lo)
        vmax = self.vmax if self.vmax is not None else (1.0 if in_unit else hi)
        if vmin >= vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        classes = self.labels if self.labels is not None and cols == len(self.labels) else None
        values = self.values and rows <= MAX_CELL_VALUES and cols <= MAX_CELL_VALUES
        with self.matplotlib.rc_context(RC):  # ticks are made while drawing: they read rcParams
            frame = self._frame(rows, cols, classes, values)
            frame.image.set_data(grid)
            frame.image.set_clim(vmin, vmax)  # the colour bar follows
            frame.heading.set_text(self.title + note)
            cmap = frame.image.cmap
            for text, v in zip(frame.texts, grid.reshape(-1) if frame.texts else (), strict=True):
                r, g, b, _ = cmap((v - vmin) / (vmax - vmin))
                text.set_text(f"{v:.2f}" if in_unit else _number(float(v)))
                text.set_color("white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
            return canvas_png(frame.canvas)

    def _frame(self, rows: int, cols: int, classes: tuple[str, ...] | None, values: bool) -> _HeatmapFrame:
        """The figure for this grid's layout, kept while requests keep that layout."""
        key = (rows, cols, classes is not None, values)
        if self.frame is not None and self.frame.key == key:
            return self.frame
        fig = self.figure_class(figsize=(6.4, 4.8), dpi=100)
        canvas = self.canvas_class(fig)
        ax = fig.add_axes((0.12, 0.2 if classes else 0.12, 0.74, 0.7 if classes else 0.78))
        square = rows * 4 >= cols and cols * 4 >= rows  # cells stay square unless very lopsided
        image = ax.imshow(
            np.zeros((rows, cols)),
            cmap=self.colormap,
            vmin=0.0,
            vmax=1.0,
            aspect="equal" if square else "auto",
            interpolation="nearest",
            extent=(0.5, cols + 0.5, rows + 0.5, 0.5),  # rows and columns count from 1
        )
        cax = self.divider(ax).append_axes("right", size=0.18, pad=0.12)
        fig.colorbar(image, cax=cax)
        if classes is not None:
            ax.set_xticks(range(1, cols + 1))
            long = max(len(c) for c in classes) > 3
            ax.set_xticklabels(
                [short(c, 20) for c in classes],
                rotation=45 if long else 0,
                ha="right" if long else "center",
                rotation_mode="anchor",
            )
        elif cols <= 2 * MAX_CELL_VALUES:
            ax.set_xticks(range(1, cols + 1))
        if rows <= 2 * MAX_CELL_VALUES:
            ax.set_yticks(range(1, rows + 1))
        ax.set_xlabel(self.x_label or ("class" if classes else "column"))
        ax.set_ylabel(self.y_label or "row")
        heading = ax.set_title("", fontsize=11)
        texts = []
        if values:
            size = 9 if max(rows, cols) <= 10 else 7
            for i in range(rows):
                for j in range(cols):
                    texts.append(ax.text(j + 1, i + 1, "", ha="center", va="center", fontsize=size))
        self.frame = _HeatmapFrame(key, canvas, image, heading, texts)
        return self.frame


@dataclass
class _HeatmapFrame:
    key: tuple[int, int, bool, bool]
    canvas: Any
    image: Any
    heading: Any
    texts: list[Any]
