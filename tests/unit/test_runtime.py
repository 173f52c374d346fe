"""The model runtime in-process: every example answers real requests, and every bad request a 4xx that
points at the problem. Responses are checked against the model config file's own response schema."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import Image

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.native import NativeContract
from chalicelib.core.probe import ProbeRequest, read_result
from chalicelib.core.wire import BASE64, invocation_event, negotiate
from chalicelib.runtime.codecs import Problems, check_schema
from chalicelib.runtime.handler import Runtime, load
from chalicelib.runtime.layout import MODEL_CONFIG, LayoutError, prepare_model_dir
from chalicelib.runtime.loaders import ModelLoadError, threads_for
from chalicelib.services.intake import config_file_for_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]


def _records(rows: list[list[float]]) -> list[dict[str, Any]]:
    return [dict(zip(IRIS_FEATURES, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def prepare(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """A model directory laid out as in the image, from a source directory with modelport.yaml."""

    def _prepare(src: Path) -> Path:
        dest = tmp_path_factory.mktemp("model") / src.name
        return prepare_model_dir(src, config_file_for_dir(src), dest)

    return _prepare


@pytest.fixture(scope="module")
def runtime(prepare: Callable[[Path], Path]) -> Iterator[Callable[[str], Runtime]]:
    cache: dict[str, Runtime] = {}

    def get(name: str) -> Runtime:
        if name not in cache:
            cache[name] = load(prepare(EXAMPLES / name))
        return cache[name]

    yield get


def call(
    rt: Runtime,
    body: Any,
    *,
    content_type: str = "application/json",
    accept: str | None = None,
    encoding: str = "utf8",
) -> dict[str, Any]:
    """Invoke like the control plane does; a 200 JSON answer must match the published schema."""
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    encoding = BASE64 if isinstance(body, bytes) else encoding
    response = rt.handle(invocation_event(body, content_type, accept, encoding=encoding))
    assert set(response) == {"status", "content_type", "body", "body_encoding", "timings", "runs"}
    assert {"decode_ms", "pre_ms", "model_ms", "post_ms", "encode_ms"} <= set(response["timings"])
    if response["status"] == 200 and response["content_type"] == "application/json":
        jsonschema.validate(json.loads(response["body"]), rt.protocol.response.json_schema)
    return response


def ok(response: dict[str, Any]) -> Any:
    assert response["status"] == 200, response["body"]
    return json.loads(response["body"])


def error(response: dict[str, Any], status: int = 400) -> dict[str, Any]:
    assert response["status"] == status, response["body"]
    assert response["content_type"] == "application/json"
    body: dict[str, Any] = json.loads(response["body"])
    return body


def pointers(body: dict[str, Any]) -> dict[str, str]:
    return {e["pointer"]: e["message"] for e in body["errors"]}


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return img.size


# --------------------------------------------------------------------------- iris: records -> labels + chart


@pytest.mark.parametrize("name", ["iris-onnx", "iris-skops"])
def test_iris_labels_and_figure_match_the_model_run_directly(
    runtime: Callable[[str], Runtime], name: str
) -> None:
    rt = runtime(name)
    body = ok(call(rt, {"records": _records(IRIS_ROWS)}))
    x = np.asarray(IRIS_ROWS)
    if name == "iris-onnx":
        import onnxruntime as ort  # type: ignore[import-untyped]

        session = ort.InferenceSession(str(EXAMPLES / name / "model.onnx"))
        expected = session.run(["probabilities"], {"input": x.astype(np.float32)})[0]
    else:
        import skops.io as sio

        expected = sio.load(EXAMPLES / name / "model.skops", trusted=[]).predict_proba(x)
    labels = ("setosa", "versicolor", "virginica")
    assert [row[0]["label"] for row in body["predictions"]] == ["setosa", "versicolor", "virginica"]
    for row, scores in zip(body["predictions"], expected, strict=True):
        assert [p["score"] for p in row] == sorted((p["score"] for p in row), reverse=True)
        got = {p["label"]: p["score"] for p in row}
        assert got == pytest.approx(dict(zip(labels, scores.tolist(), strict=True)), abs=1e-6)
    assert body["figure"]["media_type"] == "image/png"
    assert png_size(base64.b64decode(body["figure"]["data"])) == (640, 360)


def test_iris_rows_and_csv_answer_like_records(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("iris-onnx")
    records = ok(call(rt, {"records": _records(IRIS_ROWS)}))
    rows = ok(call(rt, {"rows": IRIS_ROWS}))
    header = ",".join(reversed(IRIS_FEATURES)) + "\n"  # a header matches columns by name, in any order
    csv_named = header + "".join(",".join(map(str, reversed(r))) + "\n" for r in IRIS_ROWS)
    csv_plain = "".join(",".join(map(str, r)) + "\r\n" for r in IRIS_ROWS)
    named = ok(call(rt, csv_named, content_type="text/csv"))
    plain = ok(call(rt, csv_plain, content_type="text/csv; charset=utf-8"))
    assert records == rows == named == plain


def test_iris_accept_png_answers_the_chart_itself(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("iris-onnx")
    response = call(rt, {"records": _records(IRIS_ROWS[:1])}, accept="image/png")
    assert (response["status"], response["content_type"], response["body_encoding"]) == (
        200,
        "image/png",
        "base64",
    )
    png = base64.b64decode(response["body"])
    assert png_size(png) == (640, 360)
    # Deterministic: the same scores give the same bytes, in this runtime and in a fresh one.
    assert base64.b64decode(call(rt, {"rows": IRIS_ROWS[:1]}, accept="image/*")["body"]) == png
    figure = ok(call(rt, {"rows": IRIS_ROWS[:1]}))["figure"]["data"]
    assert base64.b64decode(figure) == png
    # More rows: the chart shows the first one and says so in its title, so the picture differs.
    batch = ok(call(rt, {"rows": IRIS_ROWS}, accept="application/json, image/png;q=0.5"))
    assert base64.b64decode(batch["figure"]["data"]) != png


def test_init_ms_is_reported_on_the_first_invocation_only(prepare: Callable[[Path], Path]) -> None:
    rt = load(prepare(EXAMPLES / "iris-onnx"))
    first = call(rt, {"rows": IRIS_ROWS})["timings"]
    second = call(rt, {"rows": IRIS_ROWS})["timings"]
    assert first["init_ms"] > 0 and "init_ms" not in second


# --------------------------------------------------------------------------- digits: image -> top 3


def _make_examples() -> Any:
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_examples", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("digit", [0, 3, 7])
def test_digit_samples_are_recognised(runtime: Callable[[str], Runtime], digit: int) -> None:
    rt = runtime("digits-onnx")
    png = (EXAMPLES / "digits-onnx" / "samples" / f"digit-{digit}.png").read_bytes()
    raw = ok(call(rt, png, content_type="image/png"))
    wrapped = ok(call(rt, {"image": base64.b64encode(png).decode()}))
    assert raw == wrapped
    (row,) = raw["predictions"]
    assert len(row) == 3 and row[0]["label"] == str(digit)
    # The image step decodes exactly as the example script checked the samples (BOX downscaling).
    tensor = rt.pre[0].run(png)["input"]
    np.testing.assert_array_equal(tensor, _make_examples().decode_image(png))


def test_image_step_flattens_transparency_onto_white(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("digits-onnx")
    buf = io.BytesIO()
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(buf, format="PNG")  # transparent "black"
    tensor = rt.pre[0].run(buf.getvalue())["input"]
    assert tensor.shape == (1, 64) and not tensor.any()  # white paper, inverted: no ink


# --------------------------------------------------------------------------- diabetes: records -> tensors


def test_diabetes_prediction_equals_the_booster(runtime: Callable[[str], Runtime]) -> None:
    import lightgbm

    rt = runtime("diabetes-lightgbm")
    features = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
    rows = [[59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.86, 87], [23, 1, 21.6, 87, 183, 103.2, 70, 3, 3.89, 69]]
    body = ok(call(rt, {"records": [dict(zip(features, r, strict=True)) for r in rows]}))
    booster = lightgbm.Booster(model_file=str(EXAMPLES / "diabetes-lightgbm" / "model.txt"))
    expected = np.asarray(booster.predict(np.asarray(rows)))
    # The regression step rounds to one decimal; the scatter plot travels beside the values.
    assert body["output"] == [{"prediction": round(float(v), 1)} for v in expected]
    assert png_size(base64.b64decode(body["figure"]["data"])) == (640, 400)
    csv = ",".join(features) + "\n" + "\n".join(",".join(map(str, r)) for r in rows)
    assert ok(call(rt, csv, content_type="text/csv")) == body


# --------------------------------------------------------------------------- sentiment: a Python predictor


def test_sentiment_predictor(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("sentiment-predictor")
    positive = ok(call(rt, {"text": "What a wonderful, excellent day. I loved it!"}))["output"]
    assert positive["label"] == "positive" and positive["score"] > 0
    negative = ok(call(rt, {"text": "This was not good at all, it was awful."}))["output"]
    assert negative["label"] == "negative"
    # threshold is omitted above: its Input(default=0.0) was used, not the InputSpec object.
    assert ok(call(rt, {"text": "an excellent day"}))["output"]["label"] == "positive"
    strict = ok(call(rt, {"text": "an excellent day", "threshold": 4.5}))["output"]
    assert strict["label"] == "negative"


# --------------------------------------------------------------------------- bad requests


def test_bad_records_point_at_the_problem(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("iris-onnx")
    malformed = error(call(rt, '{"records": [{"sepal_length": 5.1,'))
    assert malformed["code"] == "InvalidRequest" and "malformed JSON" in malformed["message"]

    records = _records(IRIS_ROWS)
    del records[0]["sepal_width"]
    records[0]["colour"] = 1
    records[1]["petal_length"] = "4.5"
    records[2]["petal_width"] = True
    body = error(call(rt, {"records": records}))
    features = "sepal_length, sepal_width, petal_length, petal_width"
    assert pointers(body) == {
        "/records/0/sepal_width": "missing feature",
        "/records/0/colour": f"unknown feature (features: {features})",
        "/records/1/petal_length": "expected a number, got a string",
        "/records/2/petal_width": "expected a number, got a boolean",
    }
    assert body["message"].startswith("/records/0/sepal_width: missing feature (and 3 more problems)")

    nan = error(call(rt, '{"rows": [[5.1, NaN, 1.4, 0.2], [1, 2, 3]]}'))
    assert pointers(nan) == {
        "/rows/0/1": "must be a finite number (no NaN or infinity)",
        "/rows/1": f"expected an array of 4 numbers ({features}), got 3 values",
    }
    assert pointers(error(call(rt, {"records": [], "extra": 1}))) == {
        "/extra": "unknown key; the request has 'records' or 'rows'"
    }
    assert pointers(error(call(rt, {"records": []}))) == {"/records": "send at least one record"}
    assert pointers(error(call(rt, [1, 2]))) == {
        "": "the request must be a JSON object with 'records' or 'rows', got an array"
    }


def test_bad_csv_names_row_and_column(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("iris-onnx")
    body = error(call(rt, "5.1,3.5,1.4,0.2\n6.4,3.2,4.5\n6.3,x,6.0,2.5\n", content_type="text/csv"))
    assert body["errors"] == [
        {
            "row": 2,
            "message": "expected 4 values (sepal_length, sepal_width, petal_length, petal_width), got 3",
        },
        {"row": 3, "column": "sepal_width", "message": "'x' is not a number"},
    ]
    assert body["message"].startswith("row 2: expected 4 values")
    header = error(
        call(rt, "sepal_length,sepal_width,petal_length,colour\n1,2,3,4\n", content_type="text/csv")
    )
    assert header["errors"] == [
        {"row": 1, "column": "petal_width", "message": "missing column"},
        {
            "row": 1,
            "column": "colour",
            "message": "unknown column (features: sepal_length, sepal_width, petal_length, petal_width)",
        },
    ]
    assert error(call(rt, "1,2,3,inf\n", content_type="text/csv"))["errors"] == [
        {"row": 1, "column": "petal_width", "message": "must be a finite number (no NaN or infinity)"}
    ]


def test_content_type_and_accept_are_negotiated(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("iris-onnx")
    unsupported = error(call(rt, "<xml/>", content_type="application/xml"), 415)
    assert (
        unsupported["code"] == "UnsupportedMediaType"
        and "application/json, text/csv" in unsupported["message"]
    )
    not_acceptable = error(call(rt, {"rows": IRIS_ROWS}, accept="text/html"), 406)
    assert not_acceptable["code"] == "NotAcceptable"
    assert (
        error(call(runtime("sentiment-predictor"), {"text": "x"}, accept="image/png"), 406)["code"]
        == "NotAcceptable"
    )
    assert negotiate(None, ("application/json", "image/png")) == "application/json"
    assert negotiate("*/*", ("application/json", "image/png")) == "application/json"
    assert negotiate("image/*, application/json;q=0.9", ("application/json", "image/png")) == "image/png"
    assert negotiate("image/png;q=0", ("application/json", "image/png")) is None


def test_bad_images(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("digits-onnx")
    garbage = error(call(rt, b"not an image at all", content_type="image/png"))
    assert garbage["message"] == "the body is not an image this model takes (PNG, JPEG, WEBP)"
    png = (EXAMPLES / "digits-onnx" / "samples" / "digit-3.png").read_bytes()
    truncated = error(call(rt, png[: len(png) // 2], content_type="image/png"))
    assert truncated["message"].startswith("the image could not be decoded")
    not_base64 = error(call(rt, "plain text", content_type="image/png"))
    assert "base64" in not_base64["message"]
    assert pointers(error(call(rt, {"image": "%%%"}))) == {
        "/image": "expected the image's bytes, base64-encoded"
    }
    huge = _huge_png(20000, 20000)
    assert len(huge) < 200_000  # a few hundred KB of request, 400 megapixels once decoded
    assert error(call(rt, huge, content_type="image/png"))["message"].startswith("image too large")


def _huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG, compressed row by row so it never exists decoded in memory."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_bad_predictor_arguments(runtime: Callable[[str], Runtime]) -> None:
    rt = runtime("sentiment-predictor")
    assert pointers(error(call(rt, {"threshold": 1}))) == {"/text": "required property is missing"}
    assert pointers(error(call(rt, {"text": "a" * 2001}))) == {
        "/text": "is longer than 2000 characters (2001)"
    }
    assert pointers(error(call(rt, {"text": "ok", "threshold": 9, "mood": "x"}))) == {
        "/threshold": "must be at most 5.0",
        "/mood": "unknown property (allowed: text, threshold)",
    }
    assert pointers(error(call(rt, {"text": 5}))) == {"/text": "expected string, got a number"}
    assert pointers(error(call(rt, ""))) == {"": "the body is empty; send a JSON document"}


def test_schema_subset() -> None:
    optional_int = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}
    for value, expected in ((3.0, 3), (None, None), (2, 2)):
        problems = Problems()
        assert check_schema(value, optional_int, "/n", problems) == expected and not problems
    problems = Problems()
    check_schema(0, optional_int, "/n", problems)
    check_schema(True, optional_int, "/m", problems)
    check_schema("b", {"enum": ["a", 1]}, "/e", problems)
    check_schema(1.0, {"type": "string", "contentEncoding": "base64"}, "/s", problems)
    check_schema("***", {"type": "string", "contentEncoding": "base64"}, "/t", problems)
    assert [(i["pointer"], i["message"]) for i in problems.items] == [
        ("/n", "must be at least 1"),
        ("/m", "expected integer or null, got a boolean"),
        ("/e", 'must be one of "a", 1'),
        ("/s", "expected string, got a number"),
        ("/t", "must be base64-encoded"),
    ]


# --------------------------------------------------------------------------- user code and raw models


def _model_dir(tmp_path: Path, example: str, config: dict[str, Any], files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    shutil.copytree(EXAMPLES / example, src)
    (src / "modelport.yaml").write_text(json.dumps(config))
    for name, text in files.items():
        (src / name).write_text(text)
    return src


STEPS_PY = """
def clean(value):
    if value.get("text") == "boom":
        raise ValueError("boom")
    return {"text": value["text"]}


def shout(result):
    if result["label"] == "negative":
        raise RuntimeError("only good news")
    return {"LABEL": result["label"].upper(), "words": result["words"]}
"""


def test_user_steps_run_and_their_failures_name_the_step(
    tmp_path: Path, prepare: Callable[[Path], Path]
) -> None:
    config = {
        "name": "sentiment-steps",
        "framework": "python",
        "artifacts": ["predict.py", "weights.json"],
        "processing": {"pre": ["steps.py:clean"], "post": ["steps.py:shout"]},
    }
    rt = load(prepare(_model_dir(tmp_path, "sentiment-predictor", config, {"steps.py": STEPS_PY})))
    assert ok(call(rt, {"text": "an excellent film"})) == {
        "output": {"LABEL": "POSITIVE", "words": ["excellent"]}
    }
    assert error(call(rt, {"text": "boom"}), 502) == {
        "code": "ModelError",
        "message": "ValueError: boom",
        "stage": "pre:steps.py:clean",
    }
    assert error(call(rt, {"text": "awful"}), 502)["stage"] == "post:steps.py:shout"
    model = error(call(rt, {"text": 7}), 502)  # the user step passes a number on: predict() fails
    assert model["stage"] == "model" and model["message"].startswith("AttributeError:")


def test_a_model_without_steps_takes_and_gives_named_tensors(
    tmp_path: Path, prepare: Callable[[Path], Path]
) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    shutil.copy(EXAMPLES / "iris-onnx" / "model.onnx", src)
    (src / "modelport.yaml").write_text("name: iris-raw\n")
    rt = load(prepare(src))
    body = ok(call(rt, {"inputs": {"input": IRIS_ROWS}}))
    assert body["outputs"]["label"] == [0, 1, 2]
    assert np.asarray(body["outputs"]["probabilities"]).shape == (3, 3)
    assert pointers(error(call(rt, {"inputs": {"input": [1, 2, 3, 4]}}))) == {
        "/inputs/input": "expected 2 dimension(s) (float32[-1,4]), got shape [4]"
    }
    assert pointers(error(call(rt, {"inputs": {"input": [[1, 2, 3]], "x": 1}}))) == {
        "/inputs/x": "unknown input; the model takes input",
        "/inputs/input": "expected shape float32[-1,4], got [1, 3]",
    }
    for bad in ([["a", 1, 2, 3]], [[1, 2, 3], [4]], [[None, 1, 2, 3]]):
        assert pointers(error(call(rt, {"inputs": {"input": bad}}))) == {
            "/inputs/input": "expected a nested list of numbers (float32[-1,4])"
        }
    assert pointers(error(call(rt, {"inputs": {"input": [[1e39, 1, 2, 3]]}}))) == {
        "/inputs/input": "values must be finite and fit float32"
    }


class InProcessProbe:
    """Stands in for the sandbox with this test's own benign pickle: the probe's code, in this process."""

    def probe(self, request: ProbeRequest) -> NativeContract:
        from chalicelib.runtime.probe import probe

        doc = probe(request.artifact, request.rel, request.format, request.config.trusted_types)
        return read_result(json.dumps(doc).encode(), request.rel)


def test_pickles_load_only_when_the_config_allows_them(
    tmp_path: Path, prepare: Callable[[Path], Path]
) -> None:
    import joblib
    import skops.io as sio

    src = tmp_path / "pickled"
    src.mkdir()
    joblib.dump(sio.load(EXAMPLES / "iris-skops" / "model.skops", trusted=[]), src / "model.joblib")
    (src / "modelport.yaml").write_text("name: iris-pickle\nallow_pickle: true\n")
    allowed = prepare_model_dir(src, config_file_for_dir(src, sandbox=InProcessProbe()), tmp_path / "image")
    assert ok(call(load(allowed), {"inputs": {"input": IRIS_ROWS}}))["outputs"]["label"] == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    manifest = ModelConfigFile.model_validate_json((allowed / MODEL_CONFIG).read_text())
    (allowed / MODEL_CONFIG).write_text(manifest.model_copy(update={"allow_pickle": False}).to_json())
    with pytest.raises(ModelLoadError, match="does not allow pickles"):
        load(allowed)


def test_a_corrupt_model_fails_at_load(tmp_path: Path, prepare: Callable[[Path], Path]) -> None:
    model_dir = prepare(EXAMPLES / "iris-onnx")
    (model_dir / "model.onnx").write_bytes(b"\x08garbage")
    with pytest.raises(ModelLoadError, match=r"model\.onnx: the onnx model could not be loaded"):
        load(model_dir)
    with pytest.raises(ModelLoadError, match="cannot read the model config file"):
        load(tmp_path)


def test_prepare_model_dir_checks_digests(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(EXAMPLES / "iris-onnx", src)
    manifest = config_file_for_dir(src)
    dest = prepare_model_dir(src, manifest, tmp_path / "dest")
    assert sorted(p.name for p in dest.iterdir()) == ["model-config.json", "model.onnx"]
    assert ModelConfigFile.model_validate_json((dest / MODEL_CONFIG).read_text()) == manifest
    (src / "model.onnx").write_bytes(b"changed")
    with pytest.raises(LayoutError, match="changed since the model config file was made"):
        prepare_model_dir(src, manifest, tmp_path / "again")


def test_threads_follow_lambda_cpu_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert [threads_for(m) for m in (128, 1769, 3008, 3538, 10240)] == [1, 1, 1, 2, 5]
