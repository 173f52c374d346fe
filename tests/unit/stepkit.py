"""Shared helpers of the processing-step tests: real model directories, a small ONNX detector, real
images made with Pillow, invocation, and golden PNG comparison with a pixel tolerance."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.wire import BASE64, UTF8, invocation_event, reply_body
from chalicelib.runtime.handler import Runtime, load
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.services.intake import config_file_for_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_LABELS = ("setosa", "versicolor", "virginica")
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 5.1, 1.8]]
DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")

# The detector's boxes in its 64x64 input, and the scene drawn so they frame real shapes once mapped
# back through a letterbox of a 128x96 picture (scale 0.5, 8 pixels of bars above and below).
DETECTOR_SIZE = 64
DETECTOR_BOXES = [[12, 14, 42, 44], [13, 15, 43, 45], [44, 20, 60, 52], [0, 0, 10, 10]]
DETECTOR_SCORES = [0.92, 0.85, 0.77, 0.2]
DETECTOR_CLASSES = [0, 0, 1, 1]
SHAPES = ("circle", "square")


def records(rows: list[list[float]], features: tuple[str, ...] = IRIS_FEATURES) -> list[dict[str, Any]]:
    return [dict(zip(features, row, strict=True)) for row in rows]


def scene_png(fmt: str = "PNG") -> bytes:
    """A 128x96 picture: a red disc and a blue bar on cream paper, where the detector 'finds' them."""
    img = Image.new("RGB", (128, 96), (235, 235, 220))
    draw = ImageDraw.Draw(img)
    draw.ellipse((24, 12, 84, 72), fill=(200, 60, 60))
    draw.rectangle((88, 24, 120, 88), fill=(60, 90, 200))
    return encode(img, fmt)


def encode(img: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def write_detector(path: Path) -> None:
    """A small ONNX 'detector': fixed boxes/scores/classes (two overlapping boxes of one class, one of
    another, one below threshold), plus a real ``mask`` computed from the image (4x4 average of its
    darkness) and scores that depend on the input only through a zero weight."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> Any:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))

    nodes = [
        const("b", np.asarray([DETECTOR_BOXES], np.float32)),
        helper.make_node("Identity", ["b"], ["boxes"]),
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        const("s", np.asarray([DETECTOR_SCORES], np.float32)),
        helper.make_node("Add", ["s", "z"], ["scores"]),
        const("classes", np.asarray([DETECTOR_CLASSES], np.int64)),
        const("axes", np.asarray([1], np.int64)),
        helper.make_node("ReduceMean", ["images", "axes"], ["gray"], keepdims=1, noop_with_empty_axes=0),
        helper.make_node("Sub", ["one", "gray"], ["ink"]),
        helper.make_node("AveragePool", ["ink"], ["mask"], kernel_shape=[4, 4], strides=[4, 4]),
    ]
    # ReduceMean takes axes as an input from opset 18.
    graph = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, DETECTOR_SIZE, DETECTOR_SIZE])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("classes", TensorProto.INT64, [1, 4]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 16, 16]),
        ],
        initializer=[
            numpy_helper.from_array(np.asarray(0, np.float32), "zero"),
            numpy_helper.from_array(np.asarray(1, np.float32), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="stepkit")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def model_dir(
    tmp: Path, example: str | None, config: dict[str, Any], files: dict[str, str] | None = None
) -> Path:
    """A source model directory: an example's files (or none), ``config`` as modelport.yaml."""
    src = tmp / f"src-{config['name']}"
    if src.exists():
        shutil.rmtree(src)
    if example is None:
        src.mkdir(parents=True)
    else:
        shutil.copytree(EXAMPLES / example, src)
    (src / "modelport.yaml").write_text(json.dumps(config))
    for name, text in (files or {}).items():
        (src / name).write_text(text)
    return src


def detector_dir(tmp: Path, post: list[Any], name: str = "shapes", **extra: Any) -> Path:
    src = model_dir(
        tmp,
        None,
        {
            "name": name,
            "labels": list(SHAPES),
            "processing": {
                "pre": [{"image": {"size": [DETECTOR_SIZE, DETECTOR_SIZE], "resize": "letterbox"}}],
                "post": post,
            },
            **extra,
        },
    )
    write_detector(src / "model.onnx")
    return src


def runtime_for(tmp: Path, src: Path, *, warm: bool = True) -> Runtime:
    manifest: ModelConfigFile = config_file_for_dir(src)
    return load(prepare_model_dir(src, manifest, tmp / f"dir-{src.name}"), warm=warm)


def invoke(
    rt: Runtime,
    body: Any,
    *,
    content_type: str = "application/json",
    accept: str | None = None,
) -> dict[str, Any]:
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    response = rt.handle(
        invocation_event(body, content_type, accept, encoding=BASE64 if isinstance(body, bytes) else UTF8)
    )
    if response["status"] == 200 and response["content_type"] == "application/json":
        import jsonschema

        jsonschema.validate(json.loads(response["body"]), rt.protocol.response.json_schema)
    return response


def ok(response: dict[str, Any]) -> Any:
    assert response["status"] == 200, response["body"]
    if response["content_type"] == "image/png":
        return reply_body(response)
    return json.loads(response["body"])


def failed(response: dict[str, Any], status: int) -> dict[str, Any]:
    assert response["status"] == status, response["body"]
    body: dict[str, Any] = json.loads(response["body"])
    return body


def png_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    img.load()
    return img


# --------------------------------------------------------------------------- golden pictures

MEAN_TOLERANCE = 1.0
"""Mean absolute difference per channel (0-255) a rendering may drift by (freetype/matplotlib noise)."""
FAR_TOLERANCE = 0.005
"""Share of pixels that may differ by more than 32 in some channel (antialiasing of moved glyphs)."""


def differences(a: Image.Image, b: Image.Image) -> tuple[float, float]:
    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    diff = np.abs(x - y)
    return float(diff.mean()), float(np.mean(diff.max(axis=2) > 32))


def check_golden(name: str, png: bytes, update: Callable[[], bool] | None = None) -> None:
    """Compare ``png`` with ``tests/fixtures/golden/<name>.png`` within the tolerances above;
    ``UPDATE_GOLDEN=1`` writes it instead (then look at it)."""
    path = GOLDEN / f"{name}.png"
    wanted = update() if update is not None else os.environ.get("UPDATE_GOLDEN") == "1"
    if wanted or not path.exists():
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        if not wanted:
            raise AssertionError(f"{path} did not exist; written now - look at it and commit it")
        return
    got, golden = png_image(png), png_image(path.read_bytes())
    assert got.size == golden.size, f"{name}: {got.size} != golden {golden.size}"
    mean, far = differences(got, golden)
    assert mean < MEAN_TOLERANCE and far < FAR_TOLERANCE, (
        f"{name} differs from its golden file: mean |diff| {mean:.3f}, {far:.3%} of pixels far off "
        "(UPDATE_GOLDEN=1 rewrites it)"
    )
