"""Every visualization rendered through the runtime handler, for the tabular examples (iris, diabetes) and
the image ones (digits, a small ONNX detector), compared with golden PNGs in tests/fixtures/golden/
within a pixel tolerance (freetype/matplotlib versions move glyphs by a pixel). ``UPDATE_GOLDEN=1``
rewrites them; look at every one you rewrite."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from chalicelib.runtime.handler import Runtime
from chalicelib.runtime.steps.charts import BarChartRun, FeatureChartRun, HeatmapRun
from chalicelib.runtime.steps.overlay import OverlayRun
from tests.unit.stepkit import (
    EXAMPLES,
    IRIS_FEATURES,
    IRIS_LABELS,
    IRIS_ROWS,
    check_golden,
    detector_dir,
    differences,
    invoke,
    model_dir,
    ok,
    png_image,
    records,
    runtime_for,
    scene_png,
)

IRIS_TABULAR = {"tabular": {"features": list(IRIS_FEATURES)}}
DIGITS_PRE = {"image": {"size": [8, 8], "mode": "L", "layout": "flat", "invert": True, "scale": 1 / 255}}
DIGITS_LABELS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("viz")


@pytest.fixture(scope="module")
def runtimes(tmp: Path) -> Iterator[Callable[[str], Runtime]]:
    """The examples as committed, and variants of them with other visualizations."""
    variants: dict[str, Callable[[], Path]] = {
        "iris-onnx": lambda: EXAMPLES / "iris-onnx",
        "digits-onnx": lambda: EXAMPLES / "digits-onnx",
        "diabetes-lightgbm": lambda: EXAMPLES / "diabetes-lightgbm",
        "iris-heatmap": lambda: model_dir(
            tmp,
            "iris-onnx",
            {
                "name": "iris-heatmap",
                "labels": list(IRIS_LABELS),
                "processing": {
                    "pre": [IRIS_TABULAR],
                    "post": [
                        {"heatmap": {"title": "Iris species probabilities by flower", "y_label": "flower"}}
                    ],
                },
            },
        ),
        "diabetes-line": lambda: model_dir(
            tmp,
            "diabetes-lightgbm",
            {
                "name": "diabetes-line",
                "framework": "lightgbm",
                "artifacts": ["model.txt"],
                "processing": {
                    "pre": ["tabular"],
                    "post": [
                        {"regression": {"decimals": 1, "unit": "points"}},
                        {"line_chart": {"feature": "bmi", "title": "One patient, body mass index varied"}},
                    ],
                },
            },
        ),
        "digits-heatmap": lambda: model_dir(
            tmp,
            "digits-onnx",
            {
                "name": "digits-heatmap",
                "labels": DIGITS_LABELS,
                "processing": {
                    "pre": [DIGITS_PRE],
                    "post": [{"heatmap": {"output": "probabilities", "title": "Digit probabilities"}}],
                },
            },
        ),
        "shapes-overlay": lambda: detector_dir(
            tmp, ["boxes", {"overlay": {"title": "Shapes"}}], name="shapes-overlay"
        ),
        "shapes-heatmap": lambda: detector_dir(
            tmp,
            [
                {
                    "heatmap": {
                        "output": "mask",
                        "title": "Ink per 4x4 block",
                        "colormap": "magma",
                        "vmin": 0,
                        "vmax": 1,
                    }
                }
            ],
            name="shapes-heatmap",
        ),
    }
    cache: dict[str, Runtime] = {}

    def get(name: str) -> Runtime:
        if name not in cache:
            cache[name] = runtime_for(tmp, variants[name]())
        return cache[name]

    yield get


def _bmi_sweep() -> list[list[float]]:
    """A what-if batch: the first sample patient with body mass index 18, 19, ..., 40."""
    first = (EXAMPLES / "diabetes-lightgbm" / "samples" / "patients.csv").read_text().splitlines()[1]
    patient = [float(v) for v in first.split(",")]
    return [[*patient[:2], float(bmi), *patient[3:]] for bmi in range(18, 41)]


def _digit(n: int) -> bytes:
    return (EXAMPLES / "digits-onnx" / "samples" / f"digit-{n}.png").read_bytes()


REQUESTS: dict[str, tuple[str, Callable[[], Any], str]] = {
    # golden name: (runtime, request body, content type)
    "iris-bar_chart": ("iris-onnx", lambda: {"records": records(IRIS_ROWS[1:2])}, "application/json"),
    "iris-heatmap": ("iris-heatmap", lambda: {"rows": IRIS_ROWS}, "application/json"),
    "diabetes-scatter": (
        "diabetes-lightgbm",
        lambda: (EXAMPLES / "diabetes-lightgbm" / "samples" / "patients.csv").read_text(),
        "text/csv",
    ),
    "diabetes-line_chart": ("diabetes-line", lambda: {"rows": _bmi_sweep()}, "application/json"),
    "digits-bar_chart": ("digits-onnx", lambda: _digit(3), "image/png"),
    "digits-heatmap": ("digits-heatmap", lambda: _digit(7), "image/png"),
    "shapes-overlay": ("shapes-overlay", lambda: scene_png(), "image/png"),
    "shapes-heatmap": ("shapes-heatmap", lambda: scene_png(), "image/png"),
}
SIZES = {"bar_chart": (640, 360), "heatmap": (640, 480), "scatter": (640, 400), "line_chart": (640, 400)}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_the_handler_renders_the_golden_picture(runtimes: Callable[[str], Runtime], name: str) -> None:
    runtime_name, body, content_type = REQUESTS[name]
    rt = runtimes(runtime_name)
    png = ok(invoke(rt, body(), content_type=content_type, accept="image/png"))
    chart = name.split("-", 1)[1]
    if chart in SIZES:
        assert png_image(png).size == SIZES[chart]
    check_golden(name, png)
    # Deterministic: the same request renders the same bytes, and the JSON form carries the same picture.
    assert ok(invoke(rt, body(), content_type=content_type, accept="image/png")) == png
    answer = ok(invoke(rt, body(), content_type=content_type, accept="application/json"))
    assert base64.b64decode(answer["figure"]["data"]) == png
    assert answer["figure"]["media_type"] == "image/png"
    assert set(answer) - {"figure"}, "the structured result travels with the picture"


def test_the_overlay_is_drawn_on_the_request_image(runtimes: Callable[[str], Runtime]) -> None:
    png = ok(invoke(runtimes("shapes-overlay"), scene_png(), content_type="image/png", accept="image/png"))
    img = png_image(png).convert("RGB")
    band = img.height - 96 * 3  # the 128x96 scene enlarged x3 under the title band
    assert img.size[0] == 128 * 3 and band > 0
    inside_disc = img.getpixel((54 * 3, band + 42 * 3))
    assert inside_disc == (200, 60, 60)  # the picture's own pixels, untouched inside the box
    frame = img.getpixel((24 * 3 + 1, band + 60 * 3))
    assert frame == (31, 119, 180)  # the circle class's colour on the box's left edge


# --------------------------------------------------------------------------- renderer edge cases


def test_bar_chart_with_many_long_labels() -> None:
    names = tuple(f"class {i}: a rather long description of it" for i in range(25))
    chart = BarChartRun("Twenty-five classes, the best twenty drawn", names, 25, None)
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(25))
    row = sorted(zip(names, scores.tolist(), strict=True), key=lambda p: -p[1])
    png = chart([row, row]).png
    check_golden("bar_chart-long-labels", png)


def test_scatter_of_a_single_row() -> None:
    chart = FeatureChartRun("scatter", "One patient", "bmi", "prediction (points)", lambda v: v)
    check_golden("scatter-one-row", chart.render(np.asarray([27.5]), np.asarray([151.0])))


def test_heatmap_of_a_large_signed_grid_without_values() -> None:
    y, x = np.mgrid[-1:1:40j, -1:1:60j]
    grid = np.sin(3 * x) * np.cos(2 * y) * 250
    heatmap = HeatmapRun("A 40x60 signed field", "f", None, None, "x", "y", None, None, "cividis", True)
    check_golden("heatmap-signed-grid", heatmap.render(grid))


def test_overlay_of_a_large_photo_with_crowded_boxes() -> None:
    img = Image.new("RGB", (1600, 1000), (40, 60, 40))
    draw = ImageDraw.Draw(img)
    for i in range(8):
        draw.rectangle((100 + i * 170, 300 + (i % 3) * 120, 220 + i * 170, 700), fill=(180, 160 + i * 10, 90))
    labels = ("person", "bicycle", "a very long label that gets shortened on its tag")
    detections = [
        {"box": [100.0 + i * 170, 0.0 if i == 0 else 300.0 + (i % 3) * 120, 220.0 + i * 170, 700.0],
         "label": labels[i % 3], "score": 0.95 - i * 0.07}
        for i in range(8)
    ]  # fmt: skip
    overlay = OverlayRun("Street", labels, 1024, 320, 3, 14, True)
    png = overlay.render(img, detections)
    assert png_image(png).size == (1024, 640 + 14 + 2 + 2 * 4)
    check_golden("overlay-crowded", png)


def test_the_tolerance_accepts_noise_and_catches_a_change() -> None:
    golden = png_image(
        (Path(__file__).parents[1] / "fixtures" / "golden" / "iris-bar_chart.png").read_bytes()
    )
    noisy = np.asarray(golden.convert("RGB"), dtype=np.int16)
    noisy[::7, ::5] += 20  # faint noise over 3% of the pixels
    mean, far = differences(golden, Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    assert mean < 1.0 and far == 0.0
    changed = golden.convert("RGB").copy()
    ImageDraw.Draw(changed).rectangle((100, 60, 600, 120), fill=(255, 255, 255))  # the top bar is gone
    mean, far = differences(golden, changed)
    assert far > 0.005


def test_kept_figures_depend_on_nothing_earlier() -> None:
    """Line, scatter and heat map keep their figure between requests: a picture must not change with
    what was drawn before (other ranges, shapes, titles), and must equal a fresh renderer's."""
    x = np.linspace(18.0, 40.0, 23)
    y = 100 + 4 * x
    for kind in ("line_chart", "scatter"):
        chart = FeatureChartRun(kind, "Kept", "bmi", "prediction", lambda v: v)
        first = chart.render(x, y)
        chart.render(x[:3] * 100, -y[:3])
        assert chart.render(x, y) == first
        assert FeatureChartRun(kind, "Kept", "bmi", "prediction", lambda v: v).render(x, y) == first
    grid = np.linspace(0, 1, 12).reshape(4, 3)
    heatmap = HeatmapRun("Kept", "p", IRIS_LABELS, None, None, None, None, None, "viridis", True)
    first = heatmap.render(grid)
    heatmap.render(grid * 50 - 7)  # another colour range and number format, same layout
    heatmap.render(np.ones((2, 5)))  # another layout
    assert heatmap.render(grid) == first
    assert (
        HeatmapRun("Kept", "p", IRIS_LABELS, None, None, None, None, None, "viridis", True).render(grid)
        == first
    )
