"""XGBoost (JSON and UBJSON, without xgboost installed) and LightGBM model text inspectors."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes

from chalicelib.core.config import parse_config
from chalicelib.core.errors import ArtifactError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import Tensors, TensorSpec
from chalicelib.inspect import inspect_model
from chalicelib.inspect.xgboost import decode_ubjson

DIABETES = load_diabetes()


def inspect(model_dir: Path, **kw: Any) -> NativeContract:
    return inspect_model(model_dir, parse_config({"name": "m", **kw}))


def outputs(contract: NativeContract) -> tuple[TensorSpec, ...]:
    assert isinstance(contract.outputs, Tensors)
    return contract.outputs.tensors


# --------------------------------------------------------------------------- a UBJSON encoder


def _int(n: int) -> bytes:
    for marker, fmt, lo, hi in (
        (b"i", ">b", -(2**7), 2**7 - 1),
        (b"U", ">B", 0, 255),
        (b"I", ">h", -(2**15), 2**15 - 1),
        (b"l", ">i", -(2**31), 2**31 - 1),
    ):
        if lo <= n <= hi:
            return marker + struct.pack(fmt, n)
    return b"L" + struct.pack(">q", n)


def _str(text: str) -> bytes:
    data = text.encode()
    return _int(len(data)) + data


def to_ubj(value: Any) -> bytes:
    """Like XGBoost: numeric arrays as optimized typed containers, everything else plain."""
    if value is None:
        return b"Z"
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, float):
        return b"D" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"S" + _str(value)
    if isinstance(value, dict):
        return b"{" + b"".join(_str(k) + to_ubj(v) for k, v in value.items()) + b"}"
    if value and all(type(v) is float for v in value):
        return b"[$D#" + _int(len(value)) + struct.pack(f">{len(value)}d", *value)
    if value and all(type(v) is int and -(2**31) <= v < 2**31 for v in value):
        return b"[$l#" + _int(len(value)) + struct.pack(f">{len(value)}i", *value)
    return b"[" + b"".join(to_ubj(v) for v in value) + b"]"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_ubjson_round_trip(value: Any) -> None:
    assert decode_ubjson(to_ubj(value)) == value


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"{i\x01aU\x05i\x01bSi\x02hi}", {"a": 5, "b": "hi"}),
        (b"[$d#i\x02" + struct.pack(">ff", 1.5, -2.5) + b"NN", [1.5, -2.5]),
        (b"[$U#i\x03\x01\x02\xff", [1, 2, 255]),
        (b"[$L#U\x01" + struct.pack(">q", -(2**40)), [-(2**40)]),
        (b"[#i\x03TFZ", [True, False, None]),
        (b"{$i#i\x02i\x01a\x01i\x01b\xfe", {"a": 1, "b": -2}),
        (b"[I\x01\x00l\x00\x01\x00\x00Ca]", [256, 65536, "a"]),
        (b"N[N]", []),
        (b"HU\x031.5", "1.5"),
    ],
)
def test_ubjson_hand_encoded(data: bytes, value: Any) -> None:
    assert decode_ubjson(data) == value


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{i\x01a", "unexpected end"),
        (b"[$d#i\x09\x00\x00", "unexpected end"),
        (b"Q", "unknown marker"),
        (b"Ti\x01", "trailing data"),
        (b"[$d\x00", "without a count"),
        (b"Si\xff", "bad length"),
        (b"S\xc3\xa9", "bad length"),
        (b"SU\x02\xc3(", "invalid continuation"),
        (b"", "unexpected end"),
    ],
)
def test_ubjson_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_ubjson(data)


# --------------------------------------------------------------------------- XGBoost


def xgb_doc(objective: str, num_class: int = 0, num_target: int = 1, names: bool = True) -> Any:
    """The parts of ``booster.save_model('model.json')`` an inspector reads (XGBoost 2.x)."""
    return {
        "learner": {
            "attributes": {},
            "feature_names": ["a", "b", "c"] if names else [],
            "feature_types": ["float", "float", "int"] if names else [],
            "gradient_booster": {"name": "gbtree", "model": {"trees": [], "tree_info": []}},
            "learner_model_param": {
                "base_score": "5E-1",
                "boost_from_average": "1",
                "num_class": str(num_class),
                "num_feature": "3",
                "num_target": str(num_target),
            },
            "objective": {"name": objective, "reg_loss_param": {"scale_pos_weight": "1"}},
        },
        "version": [2, 1, 3],
    }


def test_xgboost_json_binary_classifier(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text(json.dumps(xgb_doc("binary:logistic")))
    contract = inspect(tmp_path)
    assert contract.framework == "xgboost"
    assert contract.task == "classifier"
    assert contract.model_type == "binary:logistic"
    assert contract.classes == (0, 1)
    assert contract.feature_names == ("a", "b", "c")
    assert contract.inputs == Tensors(
        tensors=(TensorSpec(name="input", datatype="FP32", shape=("batch", 3)),)
    )
    assert outputs(contract) == (TensorSpec(name="probability", datatype="FP32", shape=("batch",)),)
    assert contract.metadata == {
        "objective": "binary:logistic",
        "num_class": "0",
        "format": "json",
        "feature_types": "float,float,int",
        "booster": "gbtree",
        "xgboost_version": "2.1.3",
    }


@pytest.mark.parametrize(
    ("objective", "num_class", "num_target", "task", "output"),
    [
        ("reg:squarederror", 0, 1, "regressor", ("prediction", ("batch",))),
        ("reg:squarederror", 0, 2, "regressor", ("prediction", ("batch", 2))),
        ("count:poisson", 0, 1, "regressor", ("prediction", ("batch",))),
        ("multi:softprob", 3, 1, "classifier", ("probabilities", ("batch", 3))),
        ("multi:softmax", 3, 1, "classifier", ("label", ("batch",))),
        ("binary:logitraw", 0, 1, "classifier", ("margin", ("batch",))),
        ("rank:pairwise", 0, 1, "ranker", ("score", ("batch",))),
        ("", 0, 1, "unknown", ("prediction", ("batch",))),
    ],
)
def test_xgboost_objectives(
    tmp_path: Path,
    objective: str,
    num_class: int,
    num_target: int,
    task: str,
    output: tuple[str, tuple[Any, ...]],
) -> None:
    doc = xgb_doc(objective, num_class, num_target, names=False)
    (tmp_path / "model.json").write_text(json.dumps(doc))
    contract = inspect(tmp_path)
    assert contract.task == task
    assert contract.feature_names is None
    assert contract.n_features == 3
    (spec,) = outputs(contract)
    assert (spec.name, spec.shape) == output
    if num_class:
        assert contract.classes == (0, 1, 2)


def test_xgboost_ubj_matches_json(tmp_path: Path) -> None:
    doc = xgb_doc("multi:softprob", num_class=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.json").write_text(json.dumps(doc))
    (tmp_path / "b" / "model.ubj").write_bytes(to_ubj(doc))
    from_json, from_ubj = inspect(tmp_path / "a"), inspect(tmp_path / "b")
    assert from_ubj.metadata["format"] == "ubj"
    assert from_ubj.model_copy(update={"metadata": {}}) == from_json.model_copy(update={"metadata": {}})


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("model.json", b"{not json", "not a valid XGBoost JSON model"),
        ("model.json", b'{"version": [2]}', "not an XGBoost model \\(no top-level 'learner'\\)"),
        ("model.json", b'{"learner": {}}', "lacks learner.learner_model_param.num_feature"),
        ("model.ubj", b"{i\x01a", "not a valid XGBoost UBJSON model: unexpected end"),
        ("model.ubj", to_ubj([1, 2]), "no top-level 'learner'"),
    ],
)
def test_xgboost_bad_files(tmp_path: Path, name: str, data: bytes, problem: str) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ArtifactError, match=problem):
        inspect(tmp_path, framework="xgboost", artifacts=[name])


def test_xgboost_inconsistent_feature_names(tmp_path: Path) -> None:
    doc = xgb_doc("reg:squarederror")
    doc["learner"]["feature_names"] = ["a"]
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="names 1 features but has num_feature=3"):
        inspect(tmp_path)


def test_xgboost_non_numeric_param(tmp_path: Path) -> None:
    doc = xgb_doc("reg:squarederror")
    doc["learner"]["learner_model_param"]["num_feature"] = "many"
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="num_feature is 'many', not a number"):
        inspect(tmp_path)


def test_xgboost_float_precision_survives_ubj() -> None:
    doc = {"learner": {"weights": [0.1, math.pi]}}
    assert decode_ubjson(to_ubj(doc)) == doc


# --------------------------------------------------------------------------- LightGBM


def test_lightgbm_regressor(tmp_path: Path) -> None:
    model = lgb.LGBMRegressor(n_estimators=3, verbose=-1)
    model.fit(DIABETES.data, DIABETES.target, feature_name=list(DIABETES.feature_names))
    model.booster_.save_model(tmp_path / "model.txt")
    contract = inspect(tmp_path)
    assert contract.framework == "lightgbm"
    assert contract.task == "regressor"
    assert contract.model_type == "regression"
    assert contract.feature_names == tuple(DIABETES.feature_names)
    assert contract.inputs == Tensors(
        tensors=(TensorSpec(name="input", datatype="FP64", shape=("batch", 10)),)
    )
    assert outputs(contract) == (TensorSpec(name="prediction", datatype="FP64", shape=("batch",)),)
    assert contract.classes is None
    assert contract.metadata["objective"] == "regression"
    assert contract.metadata["format"] == "v4"


@pytest.mark.parametrize(
    ("n_classes", "output", "shape"),
    [(2, "probability", ("batch",)), (3, "probabilities", ("batch", 3))],
)
def test_lightgbm_classifiers(tmp_path: Path, n_classes: int, output: str, shape: tuple[Any, ...]) -> None:
    y = DIABETES.target
    target = (y > y.mean()).astype(int) + ((y > 200).astype(int) if n_classes == 3 else 0)
    model = lgb.LGBMClassifier(n_estimators=2, verbose=-1).fit(DIABETES.data, target)
    model.booster_.save_model(tmp_path / "model.txt")
    contract = inspect(tmp_path)
    assert contract.task == "classifier"
    assert contract.classes == tuple(range(n_classes))
    assert outputs(contract) == (TensorSpec(name=output, datatype="FP64", shape=shape),)
    assert contract.feature_names == tuple(f"Column_{i}" for i in range(10))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("hello\nworld\n", "first line must be 'tree'"),
        ("tree\nversion=v4\n\nTree=0\n", "no max_feature_idx"),
        ("tree\nmax_feature_idx=x\n", "max_feature_idx is 'x', not a number"),
        ("tree\nmax_feature_idx=2\nfeature_names=a b\n", "names 2 features but has max_feature"),
    ],
)
def test_lightgbm_bad_files(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "model.txt").write_text(text)
    with pytest.raises(ArtifactError, match=problem):
        inspect(tmp_path, framework="lightgbm", artifacts=["model.txt"])


def test_lightgbm_ranker_and_custom_objective(tmp_path: Path) -> None:
    (tmp_path / "model.txt").write_text("tree\nmax_feature_idx=0\nobjective=lambdarank\n")
    assert inspect(tmp_path).task == "ranker"
    (tmp_path / "model.txt").write_text("tree\nmax_feature_idx=0\n")
    contract = inspect(tmp_path)
    assert contract.task == "unknown"
    assert contract.metadata["objective"] == "custom"
