"""Run time: each step on real inputs (Pillow images, the examples' models and their outputs), the bad
inputs the issue lists, user steps, per-step timings and the Server-Timing header, lazy imports."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chalicelib.core.config import Processing
from chalicelib.core.steps import BUILTIN_STEPS
from chalicelib.core.steps.boxes import BoxesParams, BoxesPlan
from chalicelib.core.steps.image import ImageParams
from chalicelib.core.steps.text import TextParams, TextStep
from chalicelib.runtime.codecs import RequestError
from chalicelib.runtime.handler import Runtime
from chalicelib.runtime.loaders import ModelLoadError
from chalicelib.runtime.steps import RUNNERS, build_steps
from chalicelib.runtime.steps.base import Geometry, StepCall
from chalicelib.runtime.steps.boxes import BoxesRun, nms
from chalicelib.runtime.steps.image import ImageRun
from chalicelib.runtime.steps.scale import ScaleRun
from chalicelib.runtime.steps.scores import SoftmaxRun, ThresholdRun
from chalicelib.runtime.steps.text import TextRun
from chalicelib.services.intake import config_file_for_dir
from chalicelib.services.invoke import server_timing
from tests.unit.stepkit import (
    DIABETES_FEATURES,
    EXAMPLES,
    IRIS_FEATURES,
    IRIS_LABELS,
    IRIS_ROWS,
    detector_dir,
    encode,
    failed,
    invoke,
    model_dir,
    ok,
    records,
    runtime_for,
    scene_png,
)
from tests.unit.test_runtime import _huge_png

IRIS_TABULAR = {"tabular": {"features": list(IRIS_FEATURES)}}
DIABETES_ROWS = [
    [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87],
    [23, 1, 21.6, 87, 183, 103.2, 70, 3, 3.8918, 69],
]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("steps")


@pytest.fixture(scope="module")
def build(tmp: Path) -> Iterator[Callable[..., Runtime]]:
    """A loaded runtime of ``example`` with ``config`` (cached per name)."""
    cache: dict[str, Runtime] = {}

    def get(example: str | None, config: dict[str, Any], files: dict[str, str] | None = None) -> Runtime:
        if config["name"] not in cache:
            cache[config["name"]] = runtime_for(tmp, model_dir(tmp, example, config, files))
        return cache[config["name"]]

    yield get


@pytest.fixture(scope="module")
def shapes(tmp: Path) -> Runtime:
    return runtime_for(tmp, detector_dir(tmp, ["boxes", {"overlay": {"title": "Shapes"}}]))


def iris_probabilities(rows: list[list[float]]) -> np.ndarray:
    import onnxruntime as ort  # type: ignore[import-untyped]

    session = ort.InferenceSession(str(EXAMPLES / "iris-onnx" / "model.onnx"))
    return np.asarray(session.run(["probabilities"], {"input": np.asarray(rows, np.float32)})[0])


# --------------------------------------------------------------------------- tabular


def test_categorical_features_map_names_to_the_numbers_the_model_knows(build: Callable[..., Runtime]) -> None:
    import lightgbm

    rt = build(
        "diabetes-lightgbm",
        {
            "name": "diabetes-sex",
            "framework": "lightgbm",
            "artifacts": ["model.txt"],
            "processing": {"pre": [{"tabular": {"categories": {"sex": {"female": 1, "male": 2}}}}]},
        },
    )
    named = [dict(zip(DIABETES_FEATURES, r, strict=True)) for r in DIABETES_ROWS]
    for record, code in zip(named, ("male", "female"), strict=True):
        record["sex"] = code
    body = ok(invoke(rt, {"records": named}))
    booster = lightgbm.Booster(model_file=str(EXAMPLES / "diabetes-lightgbm" / "model.txt"))
    expected = booster.predict(np.asarray(DIABETES_ROWS, dtype=np.float64))
    assert body["outputs"]["prediction"] == pytest.approx(expected.tolist(), rel=1e-12)
    rows = [[*r[:1], code, *r[2:]] for r, code in zip(DIABETES_ROWS, ("male", "female"), strict=True)]
    assert ok(invoke(rt, {"rows": rows})) == body
    csv = "\n".join(",".join(map(str, r)) for r in rows)  # no header: category names are data, not names
    assert ok(invoke(rt, csv, content_type="text/csv")) == body
    bad = failed(invoke(rt, {"records": [{**named[0], "sex": "other"}]}), 400)
    assert bad["errors"] == [
        {"pointer": "/records/0/sex", "message": "expected one of 'female', 'male', got 'other'"}
    ]
    bad = failed(invoke(rt, "59,3,32.1,101,157,93.2,38,4,4.8598,87\n", content_type="text/csv"), 400)
    assert bad["errors"] == [
        {"row": 1, "column": "sex", "message": "expected one of 'female', 'male', got '3'"}
    ]


def test_csv_with_a_wrong_column_count_names_the_row(build: Callable[..., Runtime]) -> None:
    rt = build(
        "iris-onnx", {"name": "iris-csv", "labels": list(IRIS_LABELS), "processing": {"pre": [IRIS_TABULAR]}}
    )
    body = failed(invoke(rt, "5.1,3.5,1.4,0.2\n6.4,3.2,4.5,1.5,9.9\n", content_type="text/csv"), 400)
    assert body["errors"] == [
        {
            "row": 2,
            "message": "expected 4 values (sepal_length, sepal_width, petal_length, petal_width), got 5",
        }
    ]
    header = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4\n"
    assert failed(invoke(rt, header, content_type="text/csv"), 400)["message"].startswith(
        "row 2: expected 4 values"
    )


def test_a_missing_feature_is_named(build: Callable[..., Runtime]) -> None:
    rt = build(
        "iris-onnx", {"name": "iris-csv", "labels": list(IRIS_LABELS), "processing": {"pre": [IRIS_TABULAR]}}
    )
    record = records(IRIS_ROWS[:1])[0]
    del record["petal_width"]
    assert failed(invoke(rt, {"records": [record]}), 400)["errors"] == [
        {"pointer": "/records/0/petal_width", "message": "missing feature"}
    ]
    csv = "sepal_length,sepal_width,petal_length\n5.1,3.5,1.4\n"
    assert failed(invoke(rt, csv, content_type="text/csv"), 400)["errors"] == [
        {"row": 1, "column": "petal_width", "message": "missing column"}
    ]


def test_nan_and_infinity_are_refused_where_the_model_cannot_take_them(
    build: Callable[..., Runtime], tmp: Path
) -> None:
    rt = build(
        "iris-onnx", {"name": "iris-csv", "labels": list(IRIS_LABELS), "processing": {"pre": [IRIS_TABULAR]}}
    )
    finite = "must be a finite number (no NaN or infinity)"
    assert failed(invoke(rt, '{"rows": [[5.1, NaN, 1.4, 0.2]]}'), 400)["errors"] == [
        {"pointer": "/rows/0/1", "message": finite}
    ]
    assert failed(invoke(rt, '{"records": [{"sepal_length": Infinity, "sepal_width": 1, '
                             '"petal_length": 1, "petal_width": 1}]}'), 400)["errors"] == [
        {"pointer": "/records/0/sepal_length", "message": finite}
    ]  # fmt: skip
    assert failed(invoke(rt, "5.1,3.5,nan,0.2\n", content_type="text/csv"), 400)["errors"] == [
        {"row": 1, "column": "petal_length", "message": finite}
    ]
    raw = build("iris-onnx", {"name": "iris-raw-nan", "artifacts": ["model.onnx"]})  # no pre step: tensors
    assert failed(invoke(raw, '{"inputs": {"input": [[1, NaN, 2, 3]]}}'), 400)["errors"] == [
        {"pointer": "/inputs/input", "message": "values must be finite numbers (no NaN or infinity)"}
    ]
    scaled = build(
        "iris-onnx",
        {
            "name": "iris-scale-overflow",
            "labels": list(IRIS_LABELS),
            "processing": {"pre": [IRIS_TABULAR, {"scale": {"mean": [0, 0, 0, 0], "std": [1e-30, 1, 1, 1]}}]},
        },
    )
    overflow = failed(invoke(scaled, {"rows": [[1e10, 1, 1, 1]]}), 400)
    assert overflow["message"] == "values are too large to standardize in float32 (they overflow to infinity)"


# --------------------------------------------------------------------------- image


def _gradient(width: int = 48, height: int = 32) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - x], axis=2).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_image_decodes_every_format_and_lays_out_nchw_and_nhwc(fmt: str) -> None:
    img = _gradient()
    data = encode(img, fmt, **({"quality": 95} if fmt != "PNG" else {}))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    nchw = ImageRun(ImageParams(size=(32, 48), mean=mean, std=std), "x", ("png", "jpeg", "webp"))(data)["x"]
    nhwc = ImageRun(
        ImageParams(size=(32, 48), layout="NHWC", mean=mean, std=std), "x", ("png", "jpeg", "webp")
    )(data)["x"]
    assert nchw.shape == (1, 3, 32, 48) and nhwc.shape == (1, 32, 48, 3) and nchw.dtype == np.float32
    np.testing.assert_allclose(nchw[0].transpose(1, 2, 0), nhwc[0], rtol=1e-6)
    decoded = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB"), dtype=np.float64) / 255
    expected = (decoded - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(nhwc[0], expected, atol=1e-5)


def test_crop_and_letterbox_remember_how_to_map_back() -> None:
    data = encode(_gradient(96, 48))
    crop_inv, box_inv = StepCall(), StepCall()
    crop = ImageRun(ImageParams(size=(24, 24), resize="crop", layout="NHWC"), "x", ("png",))(data, crop_inv)[
        "x"
    ]
    boxed = ImageRun(ImageParams(size=(24, 24), resize="letterbox", layout="NHWC"), "x", ("png",))(
        data, box_inv
    )["x"]
    assert crop.shape == boxed.shape == (1, 24, 24, 3)
    assert crop_inv.image is not None and crop_inv.image.size == (96, 48)
    # crop: the centre 48x48 square, scaled by 0.5; the model's corners are the square's corners.
    assert crop_inv.geometry == Geometry(96, 48, 24, 24, 0.5, 0.5, 24.0, 0.0, 0.0, 0.0)
    corners = np.asarray([[0.0, 0.0, 24.0, 24.0]])
    np.testing.assert_allclose(crop_inv.geometry.to_source(corners), [[24, 0, 72, 48]])
    # letterbox: 96x48 -> 24x12, pasted 6 rows down between black bars.
    assert box_inv.geometry == Geometry(96, 48, 24, 24, 0.25, 0.25, 0.0, 0.0, 0, 6)
    np.testing.assert_allclose(
        box_inv.geometry.to_source(np.asarray([[0.0, 6.0, 24.0, 18.0]])), [[0, 0, 96, 48]]
    )
    assert not boxed[0, :6].any() and not boxed[0, 18:].any() and boxed[0, 6:18].any()


def test_an_image_that_does_not_decode_is_a_400(shapes: Runtime) -> None:
    garbage = failed(invoke(shapes, b"\x89PNG\r\n\x1a\nthis is not a picture", content_type="image/png"), 400)
    assert garbage["message"].startswith("the image could not be decoded") or garbage["message"].startswith(
        "the body is not an image"
    )
    text = failed(invoke(shapes, b"GIF89a not allowed", content_type="image/png"), 400)
    assert text["message"] == "the body is not an image this model takes (PNG, JPEG, WEBP)"
    png = scene_png()
    cut = failed(invoke(shapes, png[: len(png) // 2], content_type="image/png"), 400)
    assert cut["message"].startswith("the image could not be decoded")


def test_a_decompression_bomb_is_refused_before_decoding(shapes: Runtime) -> None:
    bomb = _huge_png(20000, 20000)
    body = failed(invoke(shapes, bomb, content_type="image/png"), 400)
    assert body["message"] == "image too large: 400 megapixels, the limit is 40 megapixels"
    as_json = failed(invoke(shapes, {"image": base64.b64encode(bomb).decode()}), 400)
    assert as_json["message"].startswith("image too large")


# --------------------------------------------------------------------------- text and scale


def test_text_cleans_before_the_predictor_sees_it(build: Callable[..., Runtime]) -> None:
    rt = build(
        "sentiment-predictor",
        {
            "name": "sentiment-text",
            "framework": "python",
            "artifacts": ["predict.py", "weights.json"],
            "processing": {"pre": [{"text": {"lowercase": True}}]},
        },
    )
    # Full-width letters and a zero-width space: no lexicon word matches until NFKC and cleaning.
    wide = "\uff45\uff58\uff43\uff45\uff4c\uff4c\u200b\uff45\uff4e\uff54   day"
    assert ok(invoke(rt, {"text": wide}))["output"]["words"] == ["excellent"]
    blank = failed(invoke(rt, {"text": " \t\u200b \n"}), 400)
    assert blank["errors"] == [
        {"pointer": "/text", "message": "is empty after cleaning; at least 1 character(s) are needed"}
    ]
    assert failed(invoke(rt, {"text": "x" * 2001}), 400)["errors"][0]["message"] == (
        "is longer than 2000 characters (2001)"
    )


def test_text_truncates_when_asked() -> None:
    step = TextStep(TextParams(max_length=12, truncate=True, normalize="NFC"))
    run = TextRun(step, "text", 1, 12)
    assert run({"text": "  An   excellent\u0000 film  ", "k": 1}) == {"text": "An excellent", "k": 1}
    assert run({"k": 1}) == {"k": 1}  # an optional property left out
    with pytest.raises(RequestError, match="expected string, got a number"):
        run({"text": 5})


def test_scale_standardizes_like_scikit_learn() -> None:
    from sklearn.datasets import load_iris
    from sklearn.preprocessing import StandardScaler

    x = load_iris().data
    scaler = StandardScaler().fit(x)
    run = ScaleRun("input", tuple(scaler.mean_), tuple(scaler.scale_))
    out = run({"input": x.astype(np.float32)})["input"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, scaler.transform(x), rtol=1e-5, atol=1e-5)


def test_identity_scale_keeps_the_predictions(build: Callable[..., Runtime]) -> None:
    rt = build(
        "iris-onnx",
        {
            "name": "iris-scale",
            "labels": list(IRIS_LABELS),
            "processing": {
                "pre": [IRIS_TABULAR, {"scale": {"mean": [0] * 4, "std": [1] * 4}}],
                "post": ["labels"],
            },
        },
    )
    body = ok(invoke(rt, {"rows": IRIS_ROWS}))
    expected = iris_probabilities(IRIS_ROWS)
    for row, probs in zip(body["predictions"], expected, strict=True):
        assert {p["label"]: p["score"] for p in row} == pytest.approx(
            dict(zip(IRIS_LABELS, probs.tolist(), strict=True)), abs=1e-6
        )


# --------------------------------------------------------------------------- post steps


def test_softmax_of_the_models_log_probabilities_gives_them_back() -> None:
    probabilities = iris_probabilities(IRIS_ROWS)
    logits = np.log(probabilities.astype(np.float64))
    out = SoftmaxRun("probabilities", 1.0)({"probabilities": logits, "label": np.asarray([0, 1, 2, 2])})
    np.testing.assert_allclose(out["probabilities"], probabilities, rtol=1e-5)
    assert out["label"].tolist() == [0, 1, 2, 2]
    hot = SoftmaxRun("probabilities", 10.0)({"probabilities": logits})["probabilities"]
    assert np.all(hot.max(axis=1) < probabilities.max(axis=1))  # a higher temperature flattens
    with pytest.raises(ValueError, match="NaN or infinity"):
        SoftmaxRun("p", 1.0)({"p": np.asarray([[np.inf, 0.0]])})


def test_softmax_then_labels_through_the_runtime(build: Callable[..., Runtime]) -> None:
    rt = build(
        "iris-onnx",
        {
            "name": "iris-softmax",
            "labels": list(IRIS_LABELS),
            "processing": {
                "pre": [IRIS_TABULAR],
                "post": [{"softmax": {"output": "probabilities"}}, {"top_k": {"top_k": 1}}],
            },
        },
    )
    body = ok(invoke(rt, {"rows": IRIS_ROWS[:3]}))
    assert [row[0]["label"] for row in body["predictions"]] == list(IRIS_LABELS)
    assert all(len(row) == 1 for row in body["predictions"])


def test_threshold_on_a_real_binary_classifier(tmp: Path) -> None:
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    y = np.where(data.target == 2, "virginica", "other")
    model = LogisticRegression(max_iter=1000).fit(data.data, y)
    src = model_dir(
        tmp,
        None,
        {
            "name": "virginica",
            "processing": {"pre": ["tabular"], "post": [{"threshold": {"threshold": 0.3}}]},
        },
    )
    sio.dump(model, src / "model.skops")
    rt = runtime_for(tmp, src)
    body = ok(invoke(rt, {"rows": IRIS_ROWS}))
    p = model.predict_proba(np.asarray(IRIS_ROWS))[:, 1]
    expected = [
        [{"label": "virginica", "score": pytest.approx(q)}]
        if q >= 0.3
        else [{"label": "other", "score": pytest.approx(1 - q)}]
        for q in p
    ]
    assert body["predictions"] == expected
    assert body["predictions"][2][0]["label"] == "virginica" and body["predictions"][0][0]["label"] == "other"
    one_column = ThresholdRun("p", ("no", "yes"), 0.5)({"p": np.asarray([[0.2], [0.5], [0.9]])})
    assert one_column == [[("no", pytest.approx(0.8))], [("yes", 0.5)], [("yes", 0.9)]]


def test_regression_rounds_and_names_the_unit(build: Callable[..., Runtime]) -> None:
    import lightgbm

    rt = build(
        "diabetes-lightgbm",
        {
            "name": "diabetes-units",
            "framework": "lightgbm",
            "artifacts": ["model.txt"],
            "processing": {"pre": ["tabular"], "post": [{"regression": {"decimals": 0, "unit": "points"}}]},
        },
    )
    body = ok(invoke(rt, {"rows": DIABETES_ROWS}))
    booster = lightgbm.Booster(model_file=str(EXAMPLES / "diabetes-lightgbm" / "model.txt"))
    expected = booster.predict(np.asarray(DIABETES_ROWS, dtype=np.float64))
    assert body == {"output": [{"prediction": float(round(v)), "unit": "points"} for v in expected]}


def _plan(scores: str | None = "scores", classes: str | None = "classes", n: int | None = None) -> BoxesPlan:
    return BoxesPlan("boxes", scores, classes, n)


def test_boxes_threshold_suppress_and_cap() -> None:
    outputs = {
        "boxes": np.asarray(
            [[[10, 10, 50, 50], [12, 12, 52, 52], [60, 60, 90, 90], [11, 11, 51, 51], [0, 0, 5, 5]]],
            np.float32,
        ),
        "scores": np.asarray([[0.6, 0.9, 0.8, 0.7, 0.3]], np.float32),
        "classes": np.asarray([[0, 0, 1, 1, 0]], np.int64),
    }  # fmt: skip
    rows = BoxesRun(_plan(), BoxesParams(), ("cat", "dog"))(outputs)
    # Box 1 (0.9) suppresses box 0 of its class; box 3 overlaps it too but is another class; box 4 < 0.5.
    assert [(d["label"], round(d["score"], 2), d["box"]) for d in rows[0]] == [
        ("cat", 0.9, [12.0, 12.0, 52.0, 52.0]),
        ("dog", 0.8, [60.0, 60.0, 90.0, 90.0]),
        ("dog", 0.7, [11.0, 11.0, 51.0, 51.0]),
    ]
    capped = BoxesRun(_plan(), BoxesParams(max_detections=1, iou_threshold=None), None)(outputs)
    assert [(d["label"], d["box"]) for d in capped[0]] == [("0", [12.0, 12.0, 52.0, 52.0])]
    assert nms(
        np.asarray([[0, 0, 10, 10], [0, 0, 10, 10.0]]), np.asarray([0.5, 0.5]), np.zeros(2, np.int64), 0.5
    ) == [0]


def test_boxes_decode_yolo_style_centres_in_normalized_coordinates() -> None:
    # One output [1, N, 4 + classes]: centre x, centre y, width, height (0..1), then class scores.
    outputs = {
        "output0": np.asarray(
            [[[0.5, 0.5, 0.5, 0.25, 0.1, 0.8], [0.25, 0.25, 0.1, 0.1, 0.6, 0.2]]], np.float32
        )
    }
    plan = BoxesPlan("output0", None, None, 2)
    params = BoxesParams(layout="combined", format="cxcywh", normalized=True)
    inv = StepCall(geometry=Geometry(width=640, height=320, model_width=64, model_height=64,
                                       scale_x=0.1, scale_y=0.1, dst_y=16))  # fmt: skip
    rows = BoxesRun(plan, params, ("cat", "dog"))(outputs, inv)
    # (0.5, 0.5, 0.5, 0.25) of 64 px = x 16..48, y 24..40 in the model; minus 16 bars, / 0.1 in the photo.
    assert rows[0][0] == {"box": [160.0, 80.0, 480.0, 240.0], "label": "dog", "score": pytest.approx(0.8)}
    assert rows[0][1]["label"] == "cat" and rows[0][1]["box"] == [128.0, 0.0, 192.0, 32.0]  # clipped at y 0


def test_boxes_with_per_class_scores_and_no_batch_axis() -> None:
    outputs = {
        "boxes": np.asarray([[0, 0, 10, 20], [5, 5, 10, 10]], np.float64),  # xywh, one image, no batch axis
        "scores": np.asarray([[0.1, 0.7], [0.9, 0.05]], np.float64),
    }
    rows = BoxesRun(_plan(classes=None, n=2), BoxesParams(format="xywh"), ("a", "b"))(outputs)
    assert rows == [
        [
            {"box": [5.0, 5.0, 15.0, 15.0], "label": "a", "score": 0.9},
            {"box": [0.0, 0.0, 10.0, 20.0], "label": "b", "score": 0.7},
        ]
    ]
    with pytest.raises(ValueError, match="class index 5 is out of range for 2 labels"):
        BoxesRun(_plan(), BoxesParams(), ("a", "b"))(
            {
                "boxes": np.asarray([[[0.0, 0.0, 1.0, 1.0]]]),
                "scores": np.ones((1, 1)),
                "classes": np.full((1, 1), 5),
            }
        )


def test_the_detector_answers_boxes_on_the_request_image(shapes: Runtime) -> None:
    body = ok(invoke(shapes, scene_png(), content_type="image/png"))
    assert body["detections"] == [
        [
            {"box": [24.0, 12.0, 84.0, 72.0], "label": "circle", "score": pytest.approx(0.92)},
            {"box": [88.0, 24.0, 120.0, 88.0], "label": "square", "score": pytest.approx(0.77)},
        ]
    ]
    assert body["figure"]["media_type"] == "image/png"
    jpeg = ok(invoke(shapes, scene_png("JPEG"), content_type="image/jpeg"))
    assert jpeg["detections"] == body["detections"]


# --------------------------------------------------------------------------- user steps

USER_STEPS = """
from typing import TypedDict
import numpy as np
import numpy.typing as npt
from chalicelib.runtime.codecs import RequestError


class Flower(TypedDict):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


class Prediction(TypedDict):
    label: str
    score: float


def prep(flowers: list[Flower]) -> dict[str, npt.NDArray[np.float32]]:
    if any(f["petal_length"] < 0 for f in flowers):
        raise RequestError("petal_length must not be negative")
    rows = [[f["sepal_length"], f["sepal_width"], f["petal_length"], f["petal_width"]] for f in flowers]
    return {"input": np.asarray(rows, dtype=np.float32)}


def sharpen(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    p = outputs["probabilities"] ** 2
    return {**outputs, "probabilities": p / p.sum(axis=1, keepdims=True)}


def best(rows: list[list[Prediction]]) -> list[str]:
    if rows[0][0]["label"] == "virginica":
        raise ZeroDivisionError("no virginica today")
    return [row[0]["label"] for row in rows]


def lies(rows: list[list[Prediction]]) -> list[str]:
    return [len(row) for row in rows]
"""


def _user_runtime(build: Callable[..., Runtime], last: str) -> Runtime:
    return build(
        "iris-onnx",
        {
            "name": f"iris-user-{last}",
            "labels": list(IRIS_LABELS),
            "processing": {
                "pre": ["steps.py:prep"],
                "post": ["steps.py:sharpen", "labels", f"steps.py:{last}"],
            },
        },
        {"steps.py": USER_STEPS},
    )


def test_typed_user_steps_run_with_their_types(build: Callable[..., Runtime]) -> None:
    rt = _user_runtime(build, "best")
    assert ok(invoke(rt, records(IRIS_ROWS[:2]))) == {"output": ["setosa", "versicolor"]}
    # The request is validated against the step's parameter type before it runs.
    bad = failed(invoke(rt, [{"sepal_length": 5.1}]), 400)
    assert bad["errors"][0] == {"pointer": "/0/sepal_width", "message": "required property is missing"}
    negative = records(IRIS_ROWS[:1])
    negative[0]["petal_length"] = -1.0
    assert failed(invoke(rt, negative), 400)["message"] == "petal_length must not be negative"


def test_a_user_step_that_raises_is_a_model_error_naming_it(build: Callable[..., Runtime]) -> None:
    rt = _user_runtime(build, "best")
    body = failed(invoke(rt, records(IRIS_ROWS[2:3])), 502)
    assert body == {
        "code": "ModelError",
        "message": "ZeroDivisionError: no virginica today",
        "stage": "post:steps.py:best",
    }
    liar = _user_runtime(build, "lies")
    assert failed(invoke(liar, records(IRIS_ROWS[:1])), 502) == {
        "code": "ModelError",
        "message": "TypeError: returned a value that does not match its return type: "
        "/0: expected string, got a number",
        "stage": "post:steps.py:lies",
    }


# --------------------------------------------------------------------------- timings


TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def test_each_step_is_timed_and_the_server_timing_header_is_valid(build: Callable[..., Runtime]) -> None:
    rt = _user_runtime(build, "best")
    timings = invoke(rt, records(IRIS_ROWS[:1]))["timings"]
    steps = [k for k in timings if "." in k]
    assert steps == [
        "pre.steps.py-prep_ms",
        "post.steps.py-sharpen_ms",
        "post.labels_ms",
        "post.steps.py-best_ms",
    ]
    assert sum(timings[k] for k in steps if k.startswith("post.")) <= timings["post_ms"] + 0.01
    header = server_timing(timings)
    metrics = [m.split(";") for m in header.split(", ")]
    for name, duration in metrics:
        assert TOKEN.match(name), name
        assert re.fullmatch(r"dur=\d+\.\d{3}", duration)
    assert [name for name, _ in metrics][:5] == ["decode", "pre", "model", "post", "encode"]
    assert "pre.steps.py-prep" in {name for name, _ in metrics}
    assert server_timing({"a b:c_ms": 1, "nan_ms": float("nan"), "x_ms": "slow", "ok_ms": 2}) == (
        "a-b-c;dur=1.000, ok;dur=2.000"
    )


def test_repeated_steps_get_distinct_timing_names(build: Callable[..., Runtime]) -> None:
    rt = build(
        "iris-onnx",
        {
            "name": "iris-twice",
            "labels": list(IRIS_LABELS),
            "processing": {"pre": [IRIS_TABULAR], "post": ["softmax", "softmax", "labels"]},
        },
    )
    assert [s.timing for s in rt.post] == ["post.softmax", "post.softmax-2", "post.labels"]


def test_heavy_packages_load_only_for_the_steps_that_need_them(tmp: Path) -> None:
    raw = model_dir(
        tmp,
        "iris-onnx",
        {
            "name": "iris-lazy",
            "labels": list(IRIS_LABELS),
            "processing": {"pre": [IRIS_TABULAR], "post": ["labels"]},
        },
    )
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from chalicelib.runtime.handler import load\n"
        "from chalicelib.runtime.layout import prepare_model_dir\n"
        "import chalicelib.runtime.steps\n"
        "assert not {'matplotlib', 'PIL'} & set(sys.modules), 'imported at module level'\n"
        "from chalicelib.services.intake import config_file_for_dir\n"
        f"src = Path({str(raw)!r})\n"
        f"rt = load(prepare_model_dir(src, config_file_for_dir(src), Path({str(tmp / 'lazy-dir')!r})))\n"
        "print(sorted({'matplotlib', 'PIL'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=EXAMPLES.parent, check=True
    )
    assert json.loads(result.stdout.strip().replace("'", '"')) == []


def test_every_built_in_step_has_its_run_half_in_the_registry() -> None:
    assert set(RUNNERS) == set(BUILTIN_STEPS)


def test_the_runtime_builds_the_recorded_steps_and_refuses_a_chain_they_do_not_record(tmp: Path) -> None:
    """The steps come from the config file's record (``steps``), not from replaying the chain;
    a file whose processing says otherwise is refused rather than run."""
    raw = model_dir(tmp, "iris-onnx", {"name": "iris-record", "processing": {"pre": [IRIS_TABULAR]}})
    manifest = config_file_for_dir(raw)
    assert [(b.stage, b.step) for b in manifest.steps] == [("pre", "tabular")]
    assert manifest.steps[0].args["features"] == list(IRIS_FEATURES)
    pre, post = build_steps(manifest, raw)
    assert [s.stage for s in pre] == ["pre:tabular"] and post == []
    other = manifest.model_copy(update={"processing": Processing.model_validate({"post": ["softmax"]})})
    with pytest.raises(ModelLoadError, match="do not match its processing"):
        build_steps(other, raw)


# --------------------------------------------------------------------------- typed tabular


def test_tabular_makes_integer_and_boolean_matrices_and_refuses_wrong_types_precisely() -> None:
    from chalicelib.runtime.steps.base import Table
    from chalicelib.runtime.steps.tabular import TabularRun

    ints = TabularRun(("a", "b"), "x", "int64")
    out = ints(Table(json={"records": [{"a": 1, "b": 2.0}, {"a": -3, "b": 4}]}))["x"]
    assert out.dtype == np.int64 and out.tolist() == [[1, 2], [-3, 4]]
    assert ints(Table(csv="a,b\n5,6\n"))["x"].tolist() == [[5, 6]]
    with pytest.raises(RequestError) as err:
        ints(Table(json={"rows": [[1.5, True], [2**70, "3"]]}))
    assert [e["message"] for e in err.value.errors] == [
        "expected an integer (int64), got 1.5",
        "expected an integer (int64), got a boolean",
        f"{2**70} does not fit int64 (from {-(2**63)} to {2**63 - 1})",
        "expected an integer (int64), got a string",
    ]
    flags = TabularRun(("on", "name"), "x", "float32", columns=(("on", "bool", 1), ("name", "bytes", 2)))
    got = flags(Table(csv="on,name\ntrue,ada\n0,bob\n"))
    assert got["on"].dtype == np.bool_ and got["on"].tolist() == [True, False]
    assert got["name"].shape == (2, 1) and got["name"].tolist() == [["ada"], ["bob"]]
    with pytest.raises(RequestError, match="'maybe' is not true or false"):
        flags(Table(csv="on,name\nmaybe,ada\n"))


def test_tabular_splits_float_columns_to_their_own_inputs() -> None:
    from chalicelib.runtime.steps.base import Table
    from chalicelib.runtime.steps.tabular import TabularRun

    run = TabularRun(("a", "b"), "a", "float32", columns=(("a", "float32", 2), ("b", "float64", 1)))
    got = run(Table(json={"records": [{"a": 1.5, "b": 2}, {"a": 3, "b": 4.25}]}))
    assert set(got) == {"a", "b"} and got["a"].dtype == np.float32 and got["b"].dtype == np.float64
    assert got["a"].tolist() == [[1.5], [3.0]] and got["b"].tolist() == [2.0, 4.25]
    with pytest.raises(RequestError, match="does not fit float32"):
        run(Table(csv="a,b\n1e39,1\n"))
