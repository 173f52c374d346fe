"""ONNX inspector on real exports (skl2onnx) and hand-built graphs (onnx.helper)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier

from chalicelib.core.config import parse_config
from chalicelib.core.errors import ArtifactError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import MapSpec, Tensors, TensorSpec
from chalicelib.inspect import inspect_model


def inspect(model_dir: Path, **kw: Any) -> NativeContract:
    return inspect_model(model_dir, parse_config({"name": "m", **kw}))


def tensors(value: Any) -> tuple[TensorSpec, ...]:
    assert isinstance(value, Tensors)
    return value.tensors


def export_iris(tmp_path: Path, *, zipmap: bool, strings: bool = False) -> Path:
    iris = load_iris()
    target = iris.target_names[iris.target] if strings else iris.target
    model = LogisticRegression(max_iter=500).fit(iris.data, target)
    proto = to_onnx(model, iris.data[:1].astype(np.float32), options={"zipmap": zipmap})
    onnx.save(proto, tmp_path / "model.onnx")
    return tmp_path


def save_graph(tmp_path: Path, graph: onnx.GraphProto, **kw: Any) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **kw)
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "model.onnx")
    return tmp_path


def test_classifier_with_zipmap(tmp_path: Path) -> None:
    contract = inspect(export_iris(tmp_path, zipmap=True))
    assert contract.framework == "onnx"
    assert contract.task == "classifier"
    assert contract.classes == (0, 1, 2)
    assert tensors(contract.inputs) == (TensorSpec(name="X", datatype="FP32", shape=(-1, 4)),)
    label, proba = tensors(contract.outputs)
    assert label == TensorSpec(name="output_label", datatype="INT64", shape=(-1,))
    assert proba.datatype is None and proba.shape == ("batch",)  # one map per row
    assert proba.type_repr == "seq(map(int64,tensor(float)))"
    assert proba.map_of == MapSpec(key="INT64", value="FP32", sequence=True, keys=("0", "1", "2"))
    assert proba.scores_view() == TensorSpec(name="output_probability", datatype="FP32", shape=("batch", 3))
    assert contract.n_features == 4
    assert "ai.onnx.ml=" in contract.metadata["opset"]
    assert contract.metadata["opset"].startswith("ai.onnx=")
    assert contract.metadata["producer"].startswith("skl2onnx ")
    assert contract.metadata["ir_version"].isdigit()


def test_classifier_without_zipmap_reads_labels_from_the_classifier_node(tmp_path: Path) -> None:
    contract = inspect(export_iris(tmp_path, zipmap=False, strings=True))
    assert contract.task == "classifier"
    assert contract.classes == ("setosa", "versicolor", "virginica")
    label, proba = tensors(contract.outputs)
    assert label.datatype == "BYTES"
    assert proba == TensorSpec(name="probabilities", datatype="FP32", shape=(-1, 3))


def test_regressor(tmp_path: Path) -> None:
    x, y = load_diabetes(return_X_y=True)
    proto = to_onnx(LinearRegression().fit(x, y), x[:1].astype(np.float32))
    onnx.save(proto, tmp_path / "reg.onnx")
    contract = inspect(tmp_path)
    assert contract.task == "regressor"
    assert contract.classes is None
    assert tensors(contract.outputs)[0].datatype == "FP32"
    assert contract.n_features == 10


def test_initializer_listed_as_graph_input_is_not_an_input(tmp_path: Path) -> None:
    weight = helper.make_tensor("W", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        "add",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[weight],
    )
    contract = inspect(save_graph(tmp_path, graph, doc_string="adds W"))
    assert tensors(contract.inputs) == (TensorSpec(name="X", datatype="FP32", shape=("batch", 3)),)
    assert tensors(contract.outputs)[0].shape == ("batch", 3)
    assert contract.task == "unknown"
    assert contract.classes is None
    assert contract.metadata["doc_string"] == "adds W"
    assert contract.metadata["opset"] == "ai.onnx=17"


@pytest.mark.parametrize(
    ("elem", "datatype"),
    [
        (TensorProto.FLOAT, "FP32"),
        (TensorProto.DOUBLE, "FP64"),
        (TensorProto.FLOAT16, "FP16"),
        (TensorProto.INT64, "INT64"),
        (TensorProto.INT32, "INT32"),
        (TensorProto.INT8, "INT8"),
        (TensorProto.UINT8, "UINT8"),
        (TensorProto.BOOL, "BOOL"),
        (TensorProto.STRING, "BYTES"),
    ],
)
def test_datatypes(tmp_path: Path, elem: int, datatype: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])],
        "id",
        [helper.make_tensor_value_info("a", elem, [None, 2])],
        [helper.make_tensor_value_info("b", elem, [None, 2])],
    )
    contract = inspect(save_graph(tmp_path, graph))
    assert tensors(contract.inputs)[0] == TensorSpec(name="a", datatype=datatype, shape=(-1, 2))


def test_type_without_an_oip_datatype_keeps_its_onnx_spelling(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])],
        "id",
        [helper.make_tensor_value_info("a", TensorProto.BFLOAT16, [2])],
        [helper.make_tensor_value_info("b", TensorProto.BFLOAT16, [2])],
    )
    (spec,) = tensors(inspect(save_graph(tmp_path, graph)).inputs)
    assert spec.datatype is None and spec.type_repr == "tensor(bfloat16)"


def test_truncated_model(tmp_path: Path) -> None:
    export_iris(tmp_path, zipmap=True)
    data = (tmp_path / "model.onnx").read_bytes()
    (tmp_path / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ArtifactError, match=r"^model\.onnx is not a valid ONNX model \(truncated or corrupt\): "
    ):
        inspect(tmp_path)


def test_garbage_model(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(ArtifactError, match=r"not a valid ONNX model"):
        inspect(tmp_path)


def test_external_data_is_refused(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones(256, np.float32), "W")  # raw data can go external
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        "add",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [256])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [256])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(
        model, tmp_path / "model.onnx", save_as_external_data=True, location="w.bin", size_threshold=0
    )
    assert (tmp_path / "w.bin").exists()
    with pytest.raises(ArtifactError, match="external data files, which are not supported yet"):
        inspect(tmp_path, artifacts=["model.onnx"])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_classes_from_the_constant_class_list_of_an_mlp(tmp_path: Path) -> None:
    iris = load_iris()
    model = MLPClassifier(hidden_layer_sizes=(4,), max_iter=50).fit(iris.data, iris.target + 10)
    proto = to_onnx(model, iris.data[:1].astype(np.float32), options={"zipmap": False})
    assert not {n.op_type for n in proto.graph.node} & {"ZipMap", "LinearClassifier"}
    onnx.save(proto, tmp_path / "model.onnx")
    contract = inspect(tmp_path)
    assert contract.task == "classifier"
    assert contract.classes == (10, 11, 12)


def test_repeated_default_opset_is_reported_once(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])],
        "id",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "model.onnx")
    assert inspect(tmp_path).metadata["opset"] == "ai.onnx=17"


def _zipmap_model(directory: Path, n_classes: int) -> Path:
    seq = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    graph = helper.make_graph(
        [
            helper.make_node(
                "ZipMap", ["X"], ["P"], domain="ai.onnx.ml", classlabels_int64s=list(range(n_classes))
            )
        ],
        "zipmap",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n_classes])],
        [helper.make_value_info("P", seq)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    directory.mkdir()
    onnx.save(model, str(directory / "model.onnx"))
    return directory


def test_a_zipmap_of_very_many_classes_is_a_map_of_any_keys(tmp_path: Path) -> None:
    few = inspect(_zipmap_model(tmp_path / "few", 3)).outputs
    many = inspect(_zipmap_model(tmp_path / "many", 5000)).outputs
    assert tensors(few)[0].map_of is not None and tensors(few)[0].map_of.keys == ("0", "1", "2")
    assert tensors(many)[0].map_of is not None and tensors(many)[0].map_of.keys is None
