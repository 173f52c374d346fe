"""Protocol determination: the native contract shaped by pre and post steps."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import pytest

from chalicelib.core.chain import Protocol, resolve_protocol
from chalicelib.core.config import parse_config
from chalicelib.core.errors import ProtocolError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import (
    EncodedImage,
    Figure,
    Json,
    Labels,
    Records,
    Tensors,
    TensorSpec,
    request_wire,
    response_wire,
)


def tensors(*specs: tuple[str, str | None, tuple[Any, ...]]) -> Tensors:
    return Tensors(tensors=tuple(TensorSpec(name=n, datatype=d, shape=s) for n, d, s in specs))  # type: ignore[arg-type]


IRIS = NativeContract(
    framework="onnx",
    task="classifier",
    inputs=tensors(("input", "FP32", ("N", 4))),
    outputs=tensors(("output_label", "INT64", ("N",)), ("output_probability", "FP32", ("N", 3))),
)
SKLEARN_IRIS = NativeContract(
    framework="sklearn",
    task="classifier",
    inputs=tensors(("input", "FP64", ("batch", 4))),
    outputs=tensors(("label", "BYTES", ("batch",)), ("probabilities", "FP64", ("batch", 3))),
    feature_names=("sepal_length", "sepal_width", "petal_length", "petal_width"),
    classes=("setosa", "versicolor", "virginica"),
)
RESNET = NativeContract(
    framework="onnx",
    inputs=tensors(("x", "FP32", (-1, 3, 224, 224))),
    outputs=tensors(("logits", "FP32", (-1, 1000))),
)
DIGITS = NativeContract(
    framework="onnx",
    inputs=tensors(("input", "FP32", ("N", 64))),
    outputs=tensors(("label", "INT64", ("N",)), ("probabilities", "FP32", ("N", 10))),
)


def resolve(native: NativeContract, **config: Any) -> Protocol:
    return resolve_protocol(parse_config({"name": "m", **config}), native, version=3)


def test_tabular_pre_makes_the_request_records_keyed_by_feature_names() -> None:
    proto = resolve(SKLEARN_IRIS, processing={"pre": ["tabular"], "post": ["labels"]})
    assert proto.request_value == Records.model_validate(
        {"features": [{"name": n, "datatype": "FP64"} for n in SKLEARN_IRIS.feature_names or ()]}
    )
    assert proto.request.content_types == ("application/json", "text/csv")
    assert proto.response_value == Labels(labels=("setosa", "versicolor", "virginica"), top_k=3)
    assert [t.name for t in proto.oip.inputs] == list(SKLEARN_IRIS.feature_names or ())
    assert proto.oip.versions == ["3"]


def test_chart_post_makes_the_response_a_png_with_the_structured_result() -> None:
    proto = resolve(
        IRIS,
        labels=["setosa", "versicolor", "virginica"],
        processing={
            "pre": [{"tabular": {"features": ["a", "b", "c", "d"]}}],
            "post": ["labels", "bar_chart"],
        },
    )
    assert isinstance(proto.response_value, Figure)
    assert proto.response.content_types == ("application/json", "image/png")
    assert set(proto.response.json_schema["properties"]) == {"predictions", "figure"}
    assert proto.oip.outputs[-1].parameters == {"content_type": "image/png"}
    assert [c.step for c in proto.chain] == ["tabular", "labels", "bar_chart"]
    assert proto.chain[0].produces == "float32[batch,4]"


def test_image_pre_makes_the_request_an_image_that_fits_the_model() -> None:
    proto = resolve(
        RESNET,
        labels=[f"c{i}" for i in range(1000)],
        processing={"pre": [{"image": {"size": [224, 224]}}], "post": [{"top_k": {"top_k": 5}}]},
    )
    assert isinstance(proto.request_value, EncodedImage)
    assert proto.request.content_types[:2] == ("image/png", "image/jpeg")
    assert proto.chain[0].produces == "float32[1,3,224,224]"
    assert proto.response_value == Labels(labels=tuple(f"c{i}" for i in range(1000)), top_k=5)


def test_an_impossible_pre_chain_names_both_sides() -> None:
    with pytest.raises(
        ProtocolError,
        match=r"pre step image produces float32\[1,3,224,224\] "
        r"but model input 'input' expects float32\[N,64\]",
    ):
        resolve(DIGITS, processing={"pre": [{"image": {"size": [224, 224]}}]})


def test_flat_grayscale_image_fits_a_64_feature_model() -> None:
    proto = resolve(
        DIGITS,
        labels=[str(i) for i in range(10)],
        processing={
            "pre": [{"image": {"size": [8, 8], "mode": "L", "layout": "flat"}}],
            "post": ["top_k"],
        },
    )
    assert proto.chain[0].produces == "float32[1,64]"


def test_wrong_dtype_is_refused() -> None:
    with pytest.raises(
        ProtocolError,
        match=r"produces float64\[1,64\] but model input 'input' expects float32\[N,64\]",
    ):
        resolve(
            DIGITS,
            processing={
                "pre": [{"image": {"size": [8, 8], "mode": "L", "layout": "flat", "dtype": "float64"}}]
            },
        )


def test_tabular_with_the_wrong_number_of_features() -> None:
    with pytest.raises(
        ProtocolError,
        match=r"tabular produces float32\[batch,3\] but model input 'input' expects float32\[N,4\]",
    ):
        resolve(IRIS, processing={"pre": [{"tabular": {"features": ["a", "b", "c"]}}]})


def test_labels_must_match_the_number_of_class_scores() -> None:
    with pytest.raises(
        ProtocolError,
        match=r"labels has 2 labels but model output 'output_probability' gives float32\[N,3\]",
    ):
        resolve(IRIS, labels=["a", "b"], processing={"post": ["labels"]})


def test_labels_without_names_asks_for_them() -> None:
    with pytest.raises(ProtocolError, match=r"needs class labels.*add labels"):
        resolve(IRIS, processing={"post": ["labels"]})


def test_config_labels_must_match_the_model_classes() -> None:
    with pytest.raises(ProtocolError, match=r"labels has 2 names but the model has 3 classes \(setosa"):
        resolve(SKLEARN_IRIS, labels=["a", "b"])


def zipmap_contract(keys: tuple[str, ...] | None) -> NativeContract:
    from chalicelib.core.protocol import MapSpec

    return NativeContract(
        framework="onnx",
        task="classifier",
        inputs=tensors(("input", "FP32", ("N", 4))),
        outputs=Tensors(
            tensors=(
                TensorSpec(name="output_label", datatype="INT64", shape=("N",)),
                TensorSpec(
                    name="output_probability",
                    datatype=None,
                    shape=("batch",),
                    type_repr="seq(map(int64,tensor(float)))",
                    map_of=MapSpec(key="INT64", value="FP32", sequence=True, keys=keys),
                ),
            )
        ),
        classes=(0, 1, 2),
    )


def test_a_zipmap_of_known_keys_is_class_scores_for_every_score_step() -> None:
    native = zipmap_contract(("0", "1", "2"))
    for post in (["labels"], ["top_k"], ["bar_chart"]):
        proto = resolve(native, labels=["a", "b", "c"], processing={"post": post})
        assert proto.response_value.describe().startswith(("labels", "figure")), post
    raw = resolve(native)
    schema = raw.response.json_schema["properties"]["outputs"]["properties"]["output_probability"]
    assert schema["items"]["required"] == ["0", "1", "2"] and schema["items"]["additionalProperties"] is False
    jsonschema.validate(raw.response.example, raw.response.json_schema)
    (_, proba) = raw.oip.outputs
    assert (
        proba.datatype == "FP32"
        and proba.shape == [-1, 3]
        and proba.parameters == {"keys": '["0", "1", "2"]'}
    )
    with pytest.raises(ProtocolError, match="2 names but the model has 3 classes"):
        resolve(native, labels=["a", "b"], processing={"post": ["labels"]})


def test_a_map_of_unknown_keys_is_json_objects_not_class_scores() -> None:
    native = zipmap_contract(None)
    raw = resolve(native)
    schema = raw.response.json_schema["properties"]["outputs"]["properties"]["output_probability"]
    assert schema["items"]["additionalProperties"]["type"] == "number"
    assert raw.oip.outputs[1].datatype == "BYTES"
    with pytest.raises(ProtocolError, match=r"needs one float \[batch, classes\] output"):
        resolve(native, labels=["a", "b", "c"], processing={"post": ["labels"]})


def test_a_fixed_dimension_is_an_exact_item_count() -> None:
    native = NativeContract(
        framework="onnx", inputs=tensors(("x", "FP32", (3, 2))), outputs=tensors(("y", "FP32", (3,)))
    )
    proto = resolve(native)
    x = proto.request.json_schema["properties"]["inputs"]["properties"]["x"]
    assert (x["minItems"], x["maxItems"], x["items"]["minItems"], x["items"]["maxItems"]) == (3, 3, 2, 2)
    jsonschema.validate(proto.request.example, proto.request.json_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"inputs": {"x": [[1.0, 2.0]]}}, proto.request.json_schema)


def test_a_zipmap_output_is_not_class_scores() -> None:
    zipmap = NativeContract(
        framework="onnx",
        inputs=tensors(("input", "FP32", ("N", 4))),
        outputs=Tensors(
            tensors=(
                TensorSpec(name="output_label", datatype="INT64", shape=("N",)),
                TensorSpec(
                    name="output_probability",
                    datatype=None,
                    type_repr="seq(map(int64,tensor(float)))",
                ),
            )
        ),
    )
    with pytest.raises(
        ProtocolError,
        match=r"needs one float \[batch, classes\] output.*seq\(map\(int64,tensor\(float\)\)\)",
    ):
        resolve(zipmap, labels=["a", "b", "c"], processing={"post": ["labels"]})


def test_a_multi_input_model_cannot_take_one_pre_tensor() -> None:
    two = NativeContract(
        framework="onnx",
        inputs=tensors(("a", "FP32", (1, 4)), ("b", "FP32", (1, 4))),
        outputs=tensors(("y", "FP32", (1,))),
    )
    with pytest.raises(ProtocolError, match=r"one \[batch, 1\] tensor per feature, but the model takes a: "):
        resolve(two, processing={"pre": ["tabular"]})


def test_tabular_routes_each_feature_to_its_own_typed_input() -> None:
    columns = NativeContract(
        framework="onnx",
        inputs=tensors(("colour", "BYTES", (-1, 1)), ("size", "FP32", (-1, 1)), ("count", "INT64", (-1, 1))),
        outputs=tensors(("y", "INT64", (-1,))),
    )
    proto = resolve(columns, processing={"pre": ["tabular"]})
    record = proto.request.json_schema["oneOf"][0]["properties"]["records"]["items"]["properties"]
    assert (record["colour"]["type"], record["size"]["type"], record["count"]["type"]) == (
        "string", "number", "integer",
    )  # fmt: skip
    jsonschema.validate({"records": [{"colour": "red", "size": 1.5, "count": 2}]}, proto.request.json_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"records": [{"colour": 3, "size": 1.5, "count": 2}]}, proto.request.json_schema)
    with pytest.raises(ProtocolError, match="categories of 'colour' map names to numbers"):
        resolve(columns, processing={"pre": [{"tabular": {"categories": {"colour": {"red": 1}}}}]})


def test_no_steps_exposes_the_native_tensors() -> None:
    proto = resolve(RESNET)
    assert proto.request_value == RESNET.inputs
    assert proto.oip.inputs[0].shape == [-1, 3, 224, 224]
    assert proto.request.example["inputs"]["x"][0][0][0][:2] == [0.0, 0.0]


def test_a_predictor_contract_is_json() -> None:
    schema = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "k": {"type": "integer", "minimum": 1, "default": 3},
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    predictor = NativeContract(
        framework="python",
        task="predictor",
        inputs=Json(json_schema=schema),
        outputs=Json(json_schema={"type": "number"}),
    )
    proto = resolve(predictor)
    assert proto.request.json_schema == schema
    assert proto.request.example == {"text": "text"}
    assert [(t.name, t.datatype) for t in proto.oip.inputs] == [("text", "BYTES"), ("k", "INT64")]
    with pytest.raises(ProtocolError, match="receives json"):
        resolve(predictor, labels=["a"], processing={"post": ["labels"]})


@pytest.mark.parametrize(
    "value",
    [
        IRIS.inputs,
        RESNET.inputs,
        Records.model_validate({"features": [{"name": "a"}, {"name": "b", "datatype": "FP32"}]}),
        EncodedImage(width=8, height=8),
        Json(
            json_schema={
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
            }
        ),
    ],
)
def test_request_examples_satisfy_their_schemas(value: Any) -> None:
    wire = request_wire(value)
    jsonschema.validate(wire.example, wire.json_schema)


def test_the_image_example_is_a_real_png() -> None:
    wire = request_wire(EncodedImage(width=3, height=2))
    png = base64.b64decode(wire.example["image"])
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(png)).size == (3, 2)


@pytest.mark.parametrize(
    "value",
    [
        IRIS.outputs,
        Labels(labels=("a", "b", "c"), top_k=2),
        Figure(chart="bar_chart", data=Labels(labels=("a", "b"), top_k=2)),
        Json(json_schema={"type": "object", "properties": {"score": {"type": "number"}}}),
    ],
)
def test_response_examples_satisfy_their_schemas(value: Any) -> None:
    wire = response_wire(value)
    jsonschema.validate(wire.example, wire.json_schema)


def test_a_pre_step_batch_the_model_cannot_take_is_refused_naming_the_dimension() -> None:
    three = NativeContract(
        framework="onnx",
        inputs=tensors(("x", "FP32", (3, 3, 224, 224))),
        outputs=tensors(("y", "FP32", (3, 10))),
    )
    with pytest.raises(ProtocolError, match=r"dimension 0 \(the batch\) is 1, the model takes 3"):
        resolve(three, processing={"pre": [{"image": {"size": [224, 224]}}]})
