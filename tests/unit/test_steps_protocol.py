"""Config time: every built-in step's protocol transform and packages, parameter errors, and user steps
typed from their annotations (read with ``ast``, never imported)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from chalicelib.core.chain import Protocol, resolve_protocol
from chalicelib.core.config import parse_config, parse_config_yaml
from chalicelib.core.environment import required_packages
from chalicelib.core.errors import ArtifactError, ConfigError, ProtocolError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import (
    Boxes,
    Figure,
    Json,
    Labels,
    Records,
    Tensors,
    request_wire,
    response_wire,
    schema_fits,
)
from chalicelib.core.steps import BUILTIN_STEPS, UserSignature, UserType
from chalicelib.inspect.steps import inspect_user_step, inspect_user_steps
from tests.unit.test_chain import DIGITS, IRIS, SKLEARN_IRIS, tensors

DETECTOR = NativeContract(
    framework="onnx",
    inputs=tensors(("images", "FP32", (1, 3, 64, 64))),
    outputs=tensors(
        ("boxes", "FP32", (1, 4, 4)),
        ("scores", "FP32", (1, 4)),
        ("classes", "INT64", (1, 4)),
        ("mask", "FP32", (1, 1, 16, 16)),
    ),
)
YOLO = NativeContract(
    framework="onnx",
    inputs=tensors(("images", "FP32", (1, 3, 320, 320))),
    outputs=tensors(("output0", "FP32", (1, 100, 6))),
)
REGRESSOR = NativeContract(
    framework="lightgbm",
    task="regressor",
    inputs=tensors(("input", "FP64", ("batch", 3))),
    outputs=tensors(("prediction", "FP64", ("batch",))),
    feature_names=("age", "bmi", "bp"),
)
BINARY = NativeContract(
    framework="onnx",
    inputs=tensors(("input", "FP32", ("N", 4))),
    outputs=tensors(("probability", "FP32", ("N", 1))),
)
PREDICTOR = NativeContract(
    framework="python",
    task="predictor",
    inputs=Json(
        json_schema={
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "English"},
                "threshold": {"type": "number", "default": 0.0},
            },
            "required": ["text"],
            "additionalProperties": False,
        }
    ),
    outputs=Json(json_schema={"type": "number"}),
)
IRIS_LABELS = ["setosa", "versicolor", "virginica"]
IRIS_PRE = [{"tabular": {"features": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}}]
DETECT_PRE = [{"image": {"size": [64, 64], "resize": "letterbox"}}]


def resolve(native: NativeContract, user_steps: tuple[UserSignature, ...] = (), **config: Any) -> Protocol:
    return resolve_protocol(parse_config({"name": "m", **config}), native, version=1, user_steps=user_steps)


def check_examples(proto: Protocol) -> None:
    """The generated examples of both directions satisfy their published schemas."""
    jsonschema.validate(proto.response.example, proto.response.json_schema)
    jsonschema.validate(proto.request.example, proto.request.json_schema)


# --------------------------------------------------------------------------- every step is registered


def test_every_issue_step_is_built_in_with_its_stage_and_packages() -> None:
    expected = {
        "tabular": ("pre", ()),
        "image": ("pre", ("pillow",)),
        "text": ("pre", ()),
        "scale": ("pre", ()),
        "softmax": ("post", ()),
        "labels": ("post", ()),
        "top_k": ("post", ()),
        "threshold": ("post", ()),
        "regression": ("post", ()),
        "boxes": ("post", ()),
        "bar_chart": ("post", ("matplotlib", "pillow")),
        "line_chart": ("post", ("matplotlib", "pillow")),
        "scatter": ("post", ("matplotlib", "pillow")),
        "heatmap": ("post", ("matplotlib", "pillow")),
        "overlay": ("post", ("pillow",)),
    }
    assert {name: (cls.stage, cls.packages) for name, cls in BUILTIN_STEPS.items()} == expected


@pytest.mark.parametrize(
    ("post", "packages"),
    [
        (["regression"], {"numpy"}),
        ([{"scatter": {"feature": "bmi"}}], {"numpy", "matplotlib", "pillow"}),
    ],
)
def test_only_configured_steps_bring_their_packages(post: list[Any], packages: set[str]) -> None:
    config = parse_config({"name": "m", "processing": {"pre": ["tabular"], "post": post}})
    names = {p.split("==")[0] for p in required_packages(config, "lightgbm")}
    assert names == {"awslambdaric", "lightgbm"} | packages


# --------------------------------------------------------------------------- parameters are typed


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{threshold: {threshold: high}}", "step threshold: threshold: Input should be a valid number"),
        ("{softmax: {temperature: 0}}", "step softmax: temperature: 0 is too small (at least 0.01)"),
        ("{regression: {decimals: two}}", "step regression: decimals: Input should be a valid integer"),
        ("{boxes: {format: yolo}}", "step boxes: format: Input should be 'xyxy', 'xywh' or 'cxcywh'"),
        ("{boxes: {iou_threshold: 1.5}}", "step boxes: iou_threshold: 1.5 is too large (at most 1.0)"),
        ("{heatmap: {shape: [8]}}", "step heatmap: shape"),
        ("{heatmap: {vmin: 1, vmax: 0}}", "vmin must be less than vmax"),
        ("{scatter: {title: Chart}}", "step scatter: feature: Field required"),
        ("{line_chart: {feature: [bmi]}}", "step line_chart: feature: Input should be a valid string"),
        ("{overlay: {line_width: thick}}", "step overlay: line_width: Input should be a valid integer"),
        ("{bar_chart: {top_k: 0}}", "step bar_chart: top_k: 0 is too small (at least 1)"),
    ],
)
def test_a_post_step_parameter_of_the_wrong_type_is_a_config_error(step: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_yaml(f"name: m\nprocessing: {{post: [{step}]}}\n")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{scale: {mean: [1, 2], std: [1]}}", "mean and std need one value per feature (2 and 1)"),
        ("{scale: {mean: [1], std: [0]}}", "std values must be greater than 0"),
        ("{scale: {mean: one, std: [1]}}", "step scale: mean: Input should be a valid tuple"),
        ("{text: {max_length: -3}}", "step text: max_length: -3 is too small (at least 1)"),
        ("{text: {lowercase: sometimes}}", "step text: lowercase: Input should be a valid boolean"),
        ("{tabular: {categories: {sex: []}}}", "step tabular: categories.sex: Input should be a valid dict"),
        ("{tabular: {categories: {sex: {}}}}", "categories of 'sex' must map at least one name"),
        ("{image: {size: [224, 224], resize: squash}}", "step image: resize: Input should be 'stretch'"),
    ],
)
def test_a_pre_step_parameter_of_the_wrong_type_is_a_config_error(step: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_yaml(f"name: m\nprocessing: {{pre: [{step}]}}\n")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_visualizations_belong_under_post() -> None:
    with pytest.raises(ConfigError, match=r"pre\[0\]: scatter is a post step; move it under post:"):
        parse_config({"name": "m", "processing": {"pre": [{"scatter": {"feature": "x"}}]}})


# --------------------------------------------------------------------------- pre steps


def test_tabular_categories_become_enums_on_the_wire() -> None:
    proto = resolve(
        REGRESSOR,
        processing={"pre": [{"tabular": {"categories": {"age": {"young": 20, "old": 70}}}}]},
    )
    assert isinstance(proto.request_value, Records)
    age = proto.request_value.features[0]
    assert (age.name, age.categories) == ("age", ("young", "old"))
    schema = proto.request.json_schema
    jsonschema.validate({"records": [{"age": "old", "bmi": 30.0, "bp": 90.0}]}, schema)
    jsonschema.validate({"rows": [["young", 22.5, 80]]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"records": [{"age": "ancient", "bmi": 30.0, "bp": 90.0}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"rows": [[20, 22.5, 80]]}, schema)
    jsonschema.validate(proto.request.example, schema)
    assert [(t.name, t.datatype) for t in proto.oip.inputs][:2] == [("age", "BYTES"), ("bmi", "FP64")]


def test_tabular_categories_must_name_features() -> None:
    with pytest.raises(
        ProtocolError, match=r"categories name 'colour', which is not a feature \(age, bmi, bp\)"
    ):
        resolve(REGRESSOR, processing={"pre": [{"tabular": {"categories": {"colour": {"red": 1}}}}]})


def test_text_keeps_the_predictors_contract_and_limits() -> None:
    proto = resolve(PREDICTOR, processing={"pre": ["text"]})
    assert proto.request_value == PREDICTOR.inputs  # the same schema: limits unchanged, cleaning inside
    assert proto.chain[0].produces == "json(object)"
    truncating = resolve(PREDICTOR, processing={"pre": [{"text": {"truncate": True}}]})
    assert isinstance(truncating.request_value, Json)
    text = truncating.request_value.json_schema["properties"]["text"]
    assert text["maxLength"] == 100_000 and text["minLength"] == 1
    jsonschema.validate({"text": "x" * 5000}, truncating.request.json_schema)
    with pytest.raises(ProtocolError, match="produces json"):  # longer than the model takes
        resolve(PREDICTOR, processing={"pre": [{"text": {"max_length": 5000}}]})


@pytest.mark.parametrize(
    ("native", "params", "message"),
    [
        (IRIS, {}, r"pre step text cleans a predictor's JSON text, but the onnx model takes float32\[N,4\]"),
        (PREDICTOR, {"field": "threshold"}, r"property 'threshold', but the input's string properties are"),
    ],
)  # fmt: skip
def test_text_refuses_what_it_cannot_clean(
    native: NativeContract, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        resolve(native, processing={"pre": [{"text": params}]})


def test_scale_after_tabular_and_first() -> None:
    proto = resolve(
        IRIS,
        processing={
            "pre": [*IRIS_PRE, {"scale": {"mean": [5.8, 3.0, 3.8, 1.2], "std": [0.8, 0.4, 1.8, 0.8]}}]
        },
    )
    assert [c.step for c in proto.chain] == ["tabular", "scale"]
    assert proto.chain[1].produces == "float32[batch,4]"
    first = resolve(IRIS, processing={"pre": [{"scale": {"mean": [0, 0, 0, 0], "std": [1, 1, 1, 1]}}]})
    assert first.request_value == IRIS.inputs
    with pytest.raises(ProtocolError, match=r"scale has 3 mean/std values but receives float32\[batch,4\]"):
        resolve(IRIS, processing={"pre": [*IRIS_PRE, {"scale": {"mean": [0, 0, 0], "std": [1, 1, 1]}}]})


# --------------------------------------------------------------------------- post steps


def test_softmax_keeps_the_outputs_and_feeds_labels() -> None:
    proto = resolve(DIGITS, labels=[str(i) for i in range(10)], processing={"post": ["softmax", "labels"]})
    assert proto.chain[0].accepts == proto.chain[0].produces
    assert proto.response_value == Labels(labels=tuple(str(i) for i in range(10)), top_k=10)
    with pytest.raises(ProtocolError, match=r"softmax needs one float \[batch, classes\] output of logits"):
        resolve(REGRESSOR, processing={"post": ["softmax"]})


def test_threshold_decides_between_two_labels() -> None:
    proto = resolve(
        BINARY, labels=["benign", "malignant"], processing={"post": [{"threshold": {"threshold": 0.3}}]}
    )
    assert proto.response_value == Labels(labels=("benign", "malignant"), top_k=1)
    check_examples(proto)
    with pytest.raises(ProtocolError, match=r"needs two labels .* got 3"):
        resolve(BINARY, labels=["a", "b", "c"], processing={"post": ["threshold"]})
    with pytest.raises(ProtocolError, match=r"decides between two classes but output 'probabilities'"):
        resolve(DIGITS, labels=["a", "b"], processing={"post": ["threshold"]})


def test_regression_answers_rounded_predictions_with_their_unit() -> None:
    proto = resolve(REGRESSOR, processing={"pre": ["tabular"], "post": [{"regression": {"unit": "mmol/L"}}]})
    assert isinstance(proto.response_value, Json)
    check_examples(proto)
    good = {"output": [{"prediction": 4.2, "unit": "mmol/L"}]}
    jsonschema.validate(good, proto.response.json_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"output": [{"prediction": 4.2, "unit": "mg/dL"}]}, proto.response.json_schema)
    with pytest.raises(ProtocolError, match=r"takes one prediction per row but output 'probabilities' gives"):
        resolve(SKLEARN_IRIS, processing={"post": ["regression"]})
    with pytest.raises(ProtocolError, match=r"regression needs one float \[batch\] or \[batch, 1\] output"):
        resolve(YOLO, processing={"post": ["regression"]})


@pytest.mark.parametrize(
    ("native", "params"),
    [(DETECTOR, {}), (YOLO, {"layout": "combined", "format": "cxcywh"})],
)
def test_boxes_find_the_detector_outputs(native: NativeContract, params: dict[str, Any]) -> None:
    labels = ["circle", "square"]
    proto = resolve(
        native,
        labels=labels,
        processing={"pre": DETECT_PRE if native is DETECTOR else [], "post": [{"boxes": params}]},
    )
    assert proto.response_value == Boxes(labels=("circle", "square"), max_detections=100)
    check_examples(proto)
    assert proto.oip.outputs[0].name == "detections"


def test_boxes_explain_what_they_cannot_read() -> None:
    with pytest.raises(ProtocolError, match=r"needs a float output of boxes \[\.\., N, 4\]"):
        resolve(IRIS, processing={"post": ["boxes"]})
    with pytest.raises(ProtocolError, match=r"boxes has 3 labels but the model scores 2 classes"):
        resolve(YOLO, labels=["a", "b", "c"], processing={"post": [{"boxes": {"layout": "combined"}}]})
    with pytest.raises(ProtocolError, match=r"reads scores from 'conf'; the model gives boxes"):
        resolve(DETECTOR, processing={"post": [{"boxes": {"scores": "conf"}}]})


# --------------------------------------------------------------------------- visualizations


@pytest.mark.parametrize("chart", ["line_chart", "scatter"])
def test_feature_charts_need_the_feature_in_the_request(chart: str) -> None:
    proto = resolve(
        REGRESSOR, processing={"pre": ["tabular"], "post": ["regression", {chart: {"feature": "bmi"}}]}
    )
    assert isinstance(proto.response_value, Figure) and proto.response_value.chart == chart
    assert proto.response.content_types == ("application/json", "image/png")
    assert set(proto.response.json_schema["properties"]) == {"output", "figure"}
    check_examples(proto)
    direct = resolve(REGRESSOR, processing={"pre": ["tabular"], "post": [{chart: {"feature": "age"}}]})
    assert set(direct.response.json_schema["properties"]) == {"outputs", "figure"}
    with pytest.raises(ProtocolError, match=r"'weight' is not a feature of the request \(age, bmi, bp\)"):
        resolve(REGRESSOR, processing={"pre": ["tabular"], "post": [{chart: {"feature": "weight"}}]})
    with pytest.raises(ProtocolError, match=r"needs tabular records \(the request is float64\[batch,3\]\)"):
        resolve(REGRESSOR, processing={"post": [{chart: {"feature": "bmi"}}]})


def test_heatmap_takes_a_two_dimensional_output() -> None:
    proto = resolve(DETECTOR, processing={"pre": DETECT_PRE, "post": [{"heatmap": {"output": "mask"}}]})
    assert isinstance(proto.response_value, Figure) and proto.response_value.data == DETECTOR.outputs
    grid = resolve(SKLEARN_IRIS, processing={"post": ["heatmap"]})  # [batch, classes]: a probability grid
    assert isinstance(grid.response_value, Figure)
    with pytest.raises(ProtocolError, match=r"heatmap: shape \[4, 4\] holds 16 values but 'probabilities'"):
        resolve(DIGITS, processing={"post": [{"heatmap": {"output": "probabilities", "shape": [4, 4]}}]})
    with pytest.raises(ProtocolError, match="heatmap draws one numeric output of rank 2 or more"):
        resolve(DETECTOR, processing={"post": ["heatmap"]})  # boxes, scores, classes and mask fit


def test_overlay_draws_boxes_on_the_request_image() -> None:
    proto = resolve(
        DETECTOR, labels=["circle", "square"], processing={"pre": DETECT_PRE, "post": ["boxes", "overlay"]}
    )
    assert isinstance(proto.response_value, Figure)
    assert proto.response_value.data == Boxes(labels=("circle", "square"), max_detections=100)
    assert set(proto.response.json_schema["properties"]) == {"detections", "figure"}
    check_examples(proto)
    with pytest.raises(ProtocolError, match=r"overlay takes boxes .* but receives"):
        resolve(DETECTOR, processing={"pre": DETECT_PRE, "post": ["overlay"]})
    with pytest.raises(ProtocolError, match=r"draws on the request's image, but the request is float32"):
        resolve(DETECTOR, processing={"post": ["boxes", "overlay"]})


def test_nothing_follows_a_visualization() -> None:
    with pytest.raises(ProtocolError) as err:
        resolve(SKLEARN_IRIS, processing={"post": ["bar_chart", "labels"]})
    assert "a visualization step must be the last post step" in str(err.value)


# --------------------------------------------------------------------------- user steps


STEPS_PY = """
from typing import Any, Literal, TypedDict
import numpy as np
import numpy.typing as npt


class Flower(TypedDict):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


class Prediction(TypedDict):
    label: str
    score: float


def prep(flowers: list[Flower]) -> dict[str, npt.NDArray[np.float32]]: ...
def one(x: np.ndarray) -> np.ndarray: ...
def best(rows: list[list[Prediction]]) -> list[str]: ...
def anything(value: dict[str, Any]) -> dict[str, float]: ...
def summarize(outputs: dict[str, np.ndarray]) -> dict[str, float]: ...
def untyped(value): ...
def shout(result: "dict[str, Any]") -> Literal["LOUD", "quiet"]: ...
async def later(value: int) -> int: ...
def two(a: int, b: int) -> int: ...
def weird(value: set[int]) -> int: ...
"""


@pytest.fixture
def steps_dir(tmp_path: Path) -> Path:
    (tmp_path / "steps.py").write_text(STEPS_PY)
    return tmp_path


def test_user_step_annotations_are_read_without_importing(steps_dir: Path) -> None:
    prep = inspect_user_step(steps_dir, "steps.py:prep")
    assert prep.accepts is not None and prep.accepts.kind == "json"
    assert prep.accepts.json_schema["items"]["title"] == "Flower"
    assert prep.returns == UserType(kind="tensors")
    assert inspect_user_step(steps_dir, "steps.py:one").accepts == UserType(kind="tensor")
    untyped = inspect_user_step(steps_dir, "steps.py:untyped")
    assert (untyped.accepts, untyped.returns) == (None, None)
    shout = inspect_user_step(steps_dir, "steps.py:shout")
    assert shout.returns == UserType(kind="json", json_schema={"type": "string", "enum": ["LOUD", "quiet"]})
    config = parse_config({"name": "m", "processing": {"pre": ["steps.py:prep"], "post": ["steps.py:best"]}})
    assert [s.ref for s in inspect_user_steps(steps_dir, config)] == ["steps.py:best", "steps.py:prep"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("steps.py:missing", "steps.py defines no function missing"),
        ("nope.py:prep", "no file nope.py in the model directory"),
        ("steps.py:later", "later is async"),
        ("steps.py:two", "two must take the value as its one required parameter"),
        ("steps.py:weird", r"weird parameter 'value': unsupported type annotation 'set\[int\]'"),
    ],
)
def test_user_step_problems_are_config_time_errors(steps_dir: Path, ref: str, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        inspect_user_step(steps_dir, ref)


def test_typed_user_steps_join_the_protocol(steps_dir: Path) -> None:
    config = {
        "labels": IRIS_LABELS,
        "processing": {"pre": ["steps.py:prep"], "post": ["labels", "steps.py:best"]},
    }
    sigs = inspect_user_steps(steps_dir, parse_config({"name": "m", **config}))
    proto = resolve(IRIS, sigs, **config)
    assert isinstance(proto.request_value, Json)
    assert proto.request_value.json_schema["type"] == "array"
    jsonschema.validate(
        [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4}],
        proto.request.json_schema,
    )
    assert proto.response.json_schema["properties"]["output"] == {
        "type": "array",
        "items": {"type": "string"},
    }
    assert [c.produces for c in proto.chain] == ["float32[N,4]", "labels(top 3 of 3)", "json(array)"]
    assert {s.ref for s in proto.user_steps} == {"steps.py:prep", "steps.py:best"}


def test_user_step_types_must_fit_their_neighbours(steps_dir: Path) -> None:
    def sigs(*refs: str) -> tuple[UserSignature, ...]:
        return tuple(inspect_user_step(steps_dir, r) for r in refs)

    with pytest.raises(
        ProtocolError, match=r"post step steps.py:best takes json\(array\) but receives \(output_label"
    ):
        resolve(IRIS, sigs("steps.py:best"), labels=IRIS_LABELS, processing={"post": ["steps.py:best"]})
    with pytest.raises(
        ProtocolError, match=r"pre step steps.py:anything produces json\(object\) but the model expects"
    ):
        resolve(IRIS, sigs("steps.py:anything"), processing={"pre": ["steps.py:anything"]})
    with pytest.raises(
        ProtocolError, match=r"post step labels takes class scores but receives json\(object\)"
    ):
        resolve(
            IRIS,
            sigs("steps.py:summarize"),
            labels=IRIS_LABELS,
            processing={"post": ["steps.py:summarize", "labels"]},
        )
    # Unannotated: bridges its neighbours (the runtime checks what the model gets).
    bridged = resolve(IRIS, sigs("steps.py:untyped"), processing={"pre": ["steps.py:untyped"]})
    assert bridged.request_value == Json()


def test_schema_fits_is_conservative() -> None:
    number, integer = {"type": "number"}, {"type": "integer"}
    assert schema_fits(integer, number) and not schema_fits(number, integer)
    assert schema_fits({"type": "string", "maxLength": 10}, {"type": "string", "maxLength": 20})
    assert not schema_fits({"type": "string"}, {"type": "string", "maxLength": 20})
    assert schema_fits({"enum": ["a", "b"]}, {"type": "string"})
    assert not schema_fits({"enum": ["a", "c"]}, {"enum": ["a", "b"]})
    closed = {"type": "object", "properties": {"a": number}, "required": ["a"], "additionalProperties": False}
    assert schema_fits(
        closed, {"type": "object", "properties": {"a": number, "b": number}, "required": ["a"]}
    )
    assert not schema_fits({"type": "object", "additionalProperties": number}, closed)
    assert schema_fits({"anyOf": [integer, number]}, number)
    assert schema_fits(number, {"anyOf": [{"type": "string"}, number]})
    assert not schema_fits({}, number) and schema_fits(number, {})


@pytest.mark.parametrize(
    "value",
    [
        Boxes(labels=("a", "b"), max_detections=3),
        Boxes(labels=None, max_detections=1),
        Figure(chart="overlay", data=Boxes(labels=None, max_detections=5)),
        Figure(chart="scatter", data=Tensors(tensors=REGRESSOR.outputs.tensors)),  # type: ignore[union-attr]
    ],
)
def test_new_response_examples_satisfy_their_schemas(value: Any) -> None:
    wire = response_wire(value)
    jsonschema.validate(wire.example, wire.json_schema)
    with pytest.raises(TypeError, match="cannot be a request"):
        request_wire(value)


def test_detections_travel_as_json_in_the_open_inference_protocol() -> None:
    from chalicelib.core.config_file import build_config_file
    from chalicelib.services.oip import to_oip_response

    config = parse_config(
        {
            "name": "shapes",
            "labels": ["circle", "square"],
            "processing": {"pre": DETECT_PRE, "post": ["boxes", "overlay"]},
        }
    )
    manifest = build_config_file(config, DETECTOR, ())
    detections = [[{"box": [24.0, 12.0, 84.0, 72.0], "label": "circle", "score": 0.92}]]
    body = {"detections": detections, "figure": {"media_type": "image/png", "data": "iVBORw0KGgo="}}
    outputs = to_oip_response(manifest, body, "r1")["outputs"]
    assert [(o["name"], o["datatype"], o["shape"]) for o in outputs] == [
        ("detections", "BYTES", [1]),
        ("figure", "BYTES", [1]),
    ]
    assert json.loads(outputs[0]["data"][0]) == detections[0]
    assert [t.name for t in manifest.protocol.oip.outputs] == ["detections", "figure"]
