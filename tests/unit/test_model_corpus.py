"""Models nobody here made, as people bring them: onnxruntime's own dataset models, the ONNX package's
backend test models, scikit-learn converted with skl2onnx's defaults (a ZipMap classifier, a
ColumnTransformer with one input per column), and XGBoost and LightGBM boosters trained on pandas frames
with categorical columns.

For each: it inspects, gets a config file, an OpenAPI document an OpenAPI validator accepts and Open
Inference Protocol metadata of the spec's shape, and the generated request example is accepted by its
own schema and answered 200 by the runtime with an answer its response schema accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.openapi import openapi_document
from chalicelib.core.wire import invocation_event
from chalicelib.runtime.handler import load
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.runtime.loaders import ModelLoadError
from chalicelib.services.intake import config_file_for_dir

pytestmark = pytest.mark.unit

SITE = Path(np.__file__).resolve().parents[1]
ORT_DATASETS = SITE / "onnxruntime" / "datasets"
ONNX_BACKEND = SITE / "onnx" / "backend" / "test" / "data"
BACKEND_MODELS = sorted(ONNX_BACKEND.rglob("*.onnx"))

OIP_DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"enum": OIP_DATATYPES},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        "parameters": {"type": "object"},
    },
}
OIP_MODEL_METADATA = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}
"""``$metadata_model_response`` of the Open Inference Protocol's REST API, as its spec writes it."""

NOT_IN_ORT = "onnxruntime has no kernel for it"
ZEROS_ARE_NOT_AN_INPUT = "its inputs are shapes or split sizes: the generated zeros are not valid ones"
BACKEND_EXPECTED: dict[str, str] = {
    "test_expand_shape_model1": ZEROS_ARE_NOT_AN_INPUT,
    "test_expand_shape_model2": ZEROS_ARE_NOT_AN_INPUT,
    "test_expand_shape_model3": ZEROS_ARE_NOT_AN_INPUT,
    "test_expand_shape_model4": ZEROS_ARE_NOT_AN_INPUT,
    "test_sequence_model8": ZEROS_ARE_NOT_AN_INPUT,
}
"""Backend models the runtime cannot answer 200 with zeros, and why; every other one must, or fail to
load with a clear ModelLoadError (an old opset onnxruntime dropped, a training-only op, a locale)."""


def model_dir(tmp_path: Path, files: dict[str, bytes], yaml: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "modelport.yaml").write_text(yaml, encoding="utf-8")
    return tmp_path


def check_contract(src: Path) -> ModelConfigFile:
    """Inspect and config file; the OpenAPI and OIP documents valid; the example valid by its schema."""
    from openapi_spec_validator import validate

    manifest = config_file_for_dir(src)
    validate(openapi_document(manifest))  # type: ignore[arg-type]
    jsonschema.validate(manifest.protocol.oip.model_dump(mode="json", exclude_none=True), OIP_MODEL_METADATA)
    jsonschema.validate(manifest.protocol.request.example, manifest.protocol.request.json_schema)
    jsonschema.validate(manifest.protocol.response.example, manifest.protocol.response.json_schema)
    return manifest


def answer(src: Path, manifest: ModelConfigFile, tmp_path: Path, body: Any = None) -> dict[str, Any]:
    """The runtime's answer to ``body`` (default: the generated example), as the control plane calls it."""
    runtime = load(prepare_model_dir(src, manifest, tmp_path / "image"))
    doc = manifest.protocol.request.example if body is None else body
    return runtime.handle(invocation_event(json.dumps(doc), "application/json", None))


def answers_200(src: Path, tmp_path: Path) -> Any:
    manifest = check_contract(src)
    response = answer(src, manifest, tmp_path)
    assert response["status"] == 200, response["body"]
    body = json.loads(response["body"])
    jsonschema.validate(body, manifest.protocol.response.json_schema)
    return body


# --------------------------------------------------------------------------- the ONNX packages' own


def test_onnxruntimes_logreg_iris_zipmap_gets_labels_named_by_the_config_and_a_chart(tmp_path: Path) -> None:
    yaml = (
        "name: logreg\nframework: onnx\nartifacts: [model.onnx]\nlabels: [setosa, versicolor, virginica]\n"
        "processing:\n  post: [labels, bar_chart]\n"
    )
    src = model_dir(tmp_path, {"model.onnx": (ORT_DATASETS / "logreg_iris.onnx").read_bytes()}, yaml)
    body = answers_200(src, tmp_path)
    assert len(body["predictions"]) == 3  # the model's batch is fixed at 3
    assert {p["label"] for row in body["predictions"] for p in row} == {"setosa", "versicolor", "virginica"}
    assert body["figure"]["media_type"] == "image/png"
    flowers = {"inputs": {"float_input": [[5.1, 3.5], [6.2, 2.9], [7.7, 3.0]]}}
    response = answer(src, config_file_for_dir(src), tmp_path / "again", flowers)
    assert json.loads(response["body"])["predictions"][0][0]["label"] == "setosa"


def test_logreg_iris_raw_answers_its_maps_and_a_short_batch_is_a_400_naming_the_dimension(
    tmp_path: Path,
) -> None:
    from chalicelib.core.errors import InvalidRequest
    from chalicelib.services.invoke import RequestValidator

    yaml = "name: logreg-raw\nframework: onnx\nartifacts: [model.onnx]\n"
    src = model_dir(tmp_path, {"model.onnx": (ORT_DATASETS / "logreg_iris.onnx").read_bytes()}, yaml)
    body = answers_200(src, tmp_path)
    assert [sorted(row) for row in body["outputs"]["probabilities"]] == [["0", "1", "2"]] * 3
    oip = {t.name: t for t in config_file_for_dir(src).protocol.oip.outputs}
    assert oip["probabilities"].datatype == "FP32" and oip["probabilities"].shape == [-1, 3]
    with pytest.raises(InvalidRequest, match=r"dimension 0 of input 'float_input' is fixed at 3 .*got 1"):
        RequestValidator(config_file_for_dir(src)).validate(
            "application/json", b'{"inputs": {"float_input": [[5.1, 3.5]]}}'
        )


def test_logreg_iris_through_tabular_takes_exactly_its_three_rows(tmp_path: Path) -> None:
    from chalicelib.core.errors import InvalidRequest
    from chalicelib.services.invoke import RequestValidator

    yaml = (
        "name: logreg-tab\nframework: onnx\nartifacts: [model.onnx]\n"
        "labels: [setosa, versicolor, virginica]\n"
        "processing:\n  pre:\n    - tabular: {features: [sepal_length, sepal_width]}\n  post: [labels]\n"
    )
    src = model_dir(tmp_path, {"model.onnx": (ORT_DATASETS / "logreg_iris.onnx").read_bytes()}, yaml)
    assert len(answers_200(src, tmp_path)["predictions"]) == 3
    validator = RequestValidator(config_file_for_dir(src))
    with pytest.raises(InvalidRequest, match="the model takes exactly 3 records at a time; got 1"):
        validator.validate("application/json", b'{"records": [{"sepal_length": 5, "sepal_width": 3}]}')
    with pytest.raises(InvalidRequest, match="exactly 3 rows at a time; got 2"):
        validator.validate("text/csv", b"sepal_length,sepal_width\n5,3\n6,3\n")
    short = answer(src, config_file_for_dir(src), tmp_path / "short", {"rows": [[5.0, 3.0]]})
    assert response_status(short) == 400  # by reference, only the function sees it: the same refusal


def response_status(response: dict[str, Any]) -> int:
    return int(response["status"])


def test_onnxruntimes_sigmoid_with_fixed_dimensions(tmp_path: Path) -> None:
    yaml = "name: sigmoid\nframework: onnx\nartifacts: [model.onnx]\n"
    src = model_dir(tmp_path, {"model.onnx": (ORT_DATASETS / "sigmoid.onnx").read_bytes()}, yaml)
    body = answers_200(src, tmp_path)
    assert np.allclose(np.asarray(body["outputs"][next(iter(body["outputs"]))]), 0.5)


@pytest.mark.parametrize("path", BACKEND_MODELS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_an_onnx_backend_test_model(path: Path, tmp_path: Path) -> None:
    name = "m-" + path.parent.name.lower().replace("_", "-")[:46].strip("-")
    yaml = f"name: {name}\nframework: onnx\nartifacts: [model.onnx]\n"
    src = model_dir(tmp_path, {"model.onnx": path.read_bytes()}, yaml)
    manifest = check_contract(src)
    try:
        response = answer(src, manifest, tmp_path)
    except ModelLoadError as exc:
        assert "could not be loaded" in str(exc)
        return
    if path.parent.name in BACKEND_EXPECTED:
        assert response["status"] == 502 and "ModelError" in response["body"]
        return
    assert response["status"] == 200, response["body"]
    jsonschema.validate(json.loads(response["body"]), manifest.protocol.response.json_schema)


# --------------------------------------------------------------------------- scikit-learn, converted


def _iris() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data.astype(np.float32), data.target, [str(n) for n in data.target_names]


def test_a_skl2onnx_default_zipmap_classifier_with_string_classes(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y, names = _iris()
    model = LogisticRegression(max_iter=500).fit(x, np.asarray(names)[y])
    onx = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})  # defaults: ZipMap on
    yaml = "name: zipmap\nframework: onnx\nartifacts: [model.onnx]\nprocessing:\n  post: [top_k, bar_chart]\n"
    src = model_dir(tmp_path, {"model.onnx": onx.SerializeToString()}, yaml)
    manifest = check_contract(src)
    assert manifest.native.classes == ("setosa", "versicolor", "virginica")
    response = answer(
        src, manifest, tmp_path, {"inputs": {"X": [[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]}}
    )
    body = json.loads(response["body"])
    assert [row[0]["label"] for row in body["predictions"]] == ["setosa", "virginica"]
    raw = answers_200(
        model_dir(tmp_path / "raw", {"model.onnx": onx.SerializeToString()}, _raw("zipmap")), tmp_path
    )
    assert set(raw["outputs"]["output_probability"][0]) == {"setosa", "versicolor", "virginica"}


TABULAR = "processing:\n  pre: [tabular]\n"


def answer_csv(src: Path, manifest: ModelConfigFile, tmp_path: Path, text: str) -> dict[str, Any]:
    runtime = load(prepare_model_dir(src, manifest, tmp_path / "image"))
    return runtime.handle(invocation_event(text, "text/csv", None))


def _raw(name: str, framework: str = "onnx", artifact: str = "model.onnx") -> str:
    return f"name: {name}\nframework: {framework}\nartifacts: [{artifact}]\n"


def test_a_binary_zipmap_classifier_decides_by_threshold(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y, _ = _iris()
    model = LogisticRegression(max_iter=500).fit(x, (y == 0).astype(int))  # setosa or not
    onx = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    yaml = (
        _raw("setosa") + "labels: [other, setosa]\nprocessing:\n  post:\n    - threshold: {threshold: 0.5}\n"
    )
    src = model_dir(tmp_path, {"model.onnx": onx.SerializeToString()}, yaml)
    manifest = check_contract(src)
    flowers = {"inputs": {"X": [[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]}}
    body = json.loads(answer(src, manifest, tmp_path, flowers)["body"])
    assert [row[0]["label"] for row in body["predictions"]] == ["setosa", "other"]
    assert all(row[0]["score"] >= 0.5 for row in body["predictions"])


def test_a_column_transformer_takes_one_input_per_column_of_its_own_type(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], size=200)
    size = rng.normal(10, 3, size=200)
    count = rng.integers(0, 5, size=200)
    target = ((colour == "red") & (size > 10)).astype(int)
    columns = np.empty((200, 3), dtype=object)
    columns[:, 0], columns[:, 1], columns[:, 2] = colour, size, count
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("colour", OneHotEncoder(handle_unknown="ignore"), [0]),
                        ("numbers", StandardScaler(), [1, 2]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(columns, target)
    onx = to_onnx(
        pipeline,
        initial_types=[
            ("colour", StringTensorType([None, 1])),
            ("size", FloatTensorType([None, 1])),
            ("count", Int64TensorType([None, 1])),
        ],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    src = model_dir(tmp_path, {"model.onnx": onx.SerializeToString()}, _raw("columns"))
    manifest = check_contract(src)
    inputs = manifest.protocol.request.json_schema["properties"]["inputs"]["properties"]
    assert inputs["colour"]["items"]["items"]["type"] == "string"
    assert inputs["count"]["items"]["items"]["type"] == "integer"
    body = answers_200(src, tmp_path)
    assert set(body["outputs"]) == {"output_label", "output_probability"}
    red = {"inputs": {"colour": [["red"]], "size": [[14.0]], "count": [[2]]}}
    response = answer(src, manifest, tmp_path / "red", red)
    assert json.loads(response["body"])["outputs"]["output_label"] == [1]
    wrong = answer(
        src, manifest, tmp_path / "wrong", {"inputs": {"colour": [[3]], "size": [[1.0]], "count": [[1.5]]}}
    )
    assert wrong["status"] == 400

    typed = model_dir(tmp_path / "typed", {"model.onnx": onx.SerializeToString()}, _raw("columns") + TABULAR)
    manifest = check_contract(typed)
    body = answers_200(typed, tmp_path / "typed-example")
    records = {
        "records": [{"colour": "red", "size": 14.0, "count": 2}, {"colour": "blue", "size": 3.0, "count": 0}]
    }
    got = json.loads(answer(typed, manifest, tmp_path / "records", records)["body"])
    assert got["outputs"]["output_label"] == [1, 0]
    csv = answer_csv(typed, manifest, tmp_path / "csv", "count,colour,size\n2,red,14\n0,blue,3\n")
    assert json.loads(csv["body"])["outputs"]["output_label"] == [1, 0]
    bad = {"records": [{"colour": 3, "size": "big", "count": 1.5}]}
    refused = answer(typed, manifest, tmp_path / "bad", bad)
    assert refused["status"] == 400
    messages = {e["pointer"]: e["message"] for e in json.loads(refused["body"])["errors"]}
    assert messages == {
        "/records/0/colour": "expected a string, got a number",
        "/records/0/size": "expected a number, got a string",
        "/records/0/count": "expected an integer (int64), got 1.5",
    }
    assert body


# --------------------------------------------------------------------------- boosters on pandas frames


def _frame() -> tuple[Any, np.ndarray]:
    import pandas as pd

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, size=300).astype(float),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], size=300)),
            "spend": rng.gamma(2.0, 30.0, size=300),
        }
    )
    target = ((frame["plan"] == "pro") | (frame["spend"] > 90)).astype(int).to_numpy()
    return frame, target


def test_an_xgboost_booster_trained_on_a_frame_with_a_categorical_column(tmp_path: Path) -> None:
    import xgboost as xgb

    frame, target = _frame()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "tree_method": "hist"},
        xgb.DMatrix(frame, label=target, enable_categorical=True),
        num_boost_round=10,
    )
    booster.save_model(str(tmp_path / "model.json"))
    src = model_dir(tmp_path, {}, _raw("churn-xgb", "xgboost", "model.json"))
    manifest = check_contract(src)
    assert manifest.native.feature_names == ("age", "plan", "spend")
    assert manifest.native.metadata["feature_types"] == "float,c,float"
    answers_200(src, tmp_path)


def test_a_lightgbm_booster_trained_on_a_frame_with_a_categorical_column(tmp_path: Path) -> None:
    import lightgbm as lgb

    frame, target = _frame()
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1, n_jobs=1).fit(frame, target)
    model.booster_.save_model(str(tmp_path / "model.txt"))
    src = model_dir(tmp_path, {}, _raw("churn-lgb", "lightgbm", "model.txt"))
    manifest = check_contract(src)
    assert manifest.native.feature_names == ("age", "plan", "spend")
    assert manifest.native.metadata["categorical_features"] == "plan"
    answers_200(src, tmp_path)
