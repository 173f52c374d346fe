"""scikit-learn inspector: .skops in-process, pickles only in the isolated probe process."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeRegressor

from chalicelib.core.config import ModelConfig, parse_config
from chalicelib.core.errors import ArtifactError, UnsafeArtifact
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import Tensors, TensorSpec
from chalicelib.inspect import inspect_model
from chalicelib.inspect.sklearn import inspect_pickle

IRIS = load_iris()
DIABETES = load_diabetes()


class Doubler(RegressorMixin, BaseEstimator):
    """A user-defined estimator: skops must not load it unless the config trusts it."""

    def fit(self, x: Any, y: Any) -> Doubler:
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x: Any) -> Any:
        return 2 * x.sum(axis=1)


class Payload:
    """Unpickling this runs ``code``: the stand-in for a malicious or misbehaving pickle."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (self.code,))


def cfg(**kw: Any) -> ModelConfig:
    return parse_config({"name": "m", **kw})


def skops_contract(tmp_path: Path, model: Any, **kw: Any) -> NativeContract:
    sio.dump(model, tmp_path / "model.skops")
    return inspect_model(tmp_path, cfg(**kw))


def outputs(contract: NativeContract) -> tuple[TensorSpec, ...]:
    assert isinstance(contract.outputs, Tensors)
    return contract.outputs.tensors


def test_classifier(tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    contract = skops_contract(tmp_path, model)
    assert contract.framework == "sklearn"
    assert contract.task == "classifier"
    assert contract.model_type == "sklearn.linear_model.LogisticRegression"
    assert contract.inputs == Tensors(
        tensors=(TensorSpec(name="input", datatype="FP64", shape=("batch", 4)),)
    )
    assert contract.classes == (0, 1, 2)
    assert all(type(c) is int for c in contract.classes)
    assert contract.has_predict_proba is True
    assert outputs(contract) == (
        TensorSpec(name="label", datatype="INT64", shape=("batch",)),
        TensorSpec(name="probabilities", datatype="FP64", shape=("batch", 3)),
    )
    assert contract.feature_names is None
    assert contract.metadata["format"] == "skops"


def test_string_classes_and_feature_names(tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target_names[IRIS.target])
    model.feature_names_in_ = np.array(["sl", "sw", "pl", "pw"], dtype=object)
    contract = skops_contract(tmp_path, model)
    assert contract.classes == ("setosa", "versicolor", "virginica")
    assert outputs(contract)[0].datatype == "BYTES"
    assert contract.feature_names == ("sl", "sw", "pl", "pw")


def test_classifier_without_predict_proba(tmp_path: Path) -> None:
    contract = skops_contract(tmp_path, SVC().fit(IRIS.data, IRIS.target))
    assert contract.has_predict_proba is False
    assert [t.name for t in outputs(contract)] == ["label"]


def test_regressors(tmp_path: Path) -> None:
    contract = skops_contract(tmp_path, LinearRegression().fit(DIABETES.data, DIABETES.target))
    assert contract.task == "regressor"
    assert contract.classes is None
    assert outputs(contract) == (TensorSpec(name="prediction", datatype="FP64", shape=("batch",)),)
    assert contract.n_features == 10
    two = np.c_[DIABETES.target, -DIABETES.target]
    tree = DecisionTreeRegressor(max_depth=2).fit(DIABETES.data, two)
    contract = skops_contract(tmp_path, tree, trusted_types=["sklearn.tree._tree.Tree"])
    assert outputs(contract)[0].shape == ("batch", 2)
    contract = skops_contract(tmp_path, LinearRegression().fit(DIABETES.data, two))
    assert outputs(contract)[0].shape == ("batch", 2)


def test_pipeline_reports_its_final_step(tmp_path: Path) -> None:
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    contract = skops_contract(tmp_path, pipe.fit(IRIS.data, IRIS.target))
    assert contract.task == "pipeline"
    assert contract.model_type == "sklearn.pipeline.Pipeline"
    assert contract.metadata["final_task"] == "classifier"
    assert contract.metadata["final_step"] == "sklearn.linear_model.LogisticRegression"
    assert contract.classes == (0, 1, 2)
    assert contract.has_predict_proba is True
    assert contract.n_features == 4


def test_transformer(tmp_path: Path) -> None:
    contract = skops_contract(tmp_path, StandardScaler().fit(IRIS.data))
    assert contract.task == "transformer"
    assert contract.has_predict_proba is False
    assert outputs(contract) == (TensorSpec(name="output", datatype="FP64", shape=("batch", -1)),)


def test_unfitted_estimator(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"model\.skops holds an estimator that is not fitted"):
        skops_contract(tmp_path, LogisticRegression())


def test_not_an_estimator(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"holds a builtins\.dict, not a scikit-learn estimator"):
        skops_contract(tmp_path, {"weights": [1, 2]})


def test_untrusted_type_is_refused_until_trusted(tmp_path: Path) -> None:
    model = Doubler().fit(DIABETES.data, DIABETES.target)
    name = f"{Doubler.__module__}.Doubler"
    with pytest.raises(UnsafeArtifact, match=rf"{name}.*add them to trusted_types: in modelport"):
        skops_contract(tmp_path, model)
    contract = inspect_model(tmp_path, cfg(trusted_types=[name]))
    assert contract.task == "regressor"
    assert contract.model_type == name
    assert contract.n_features == 10


def test_corrupt_skops(tmp_path: Path) -> None:
    (tmp_path / "model.skops").write_bytes(b"not a zip archive at all")
    with pytest.raises(ArtifactError, match=r"model\.skops is not a valid \.skops file"):
        inspect_model(tmp_path, cfg())


def test_pickle_needs_opt_in(tmp_path: Path) -> None:
    joblib.dump(LinearRegression().fit(IRIS.data, IRIS.target), tmp_path / "model.joblib")
    with pytest.raises(
        UnsafeArtifact, match=r"model\.joblib is a pickle: loading it can run arbitrary code.*skops"
    ):
        inspect_model(tmp_path, cfg())


@pytest.mark.functional
def test_pickle_is_inspected_like_skops(tmp_path: Path) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(IRIS.data, IRIS.target_names[IRIS.target])
    joblib.dump(model, tmp_path / "model.joblib")
    from_pickle = inspect_model(tmp_path, cfg(allow_pickle=True))
    (tmp_path / "model.joblib").unlink()
    from_skops = skops_contract(tmp_path, model)
    assert from_pickle.metadata["format"] == "pickle"
    assert from_pickle.model_copy(update={"metadata": {}}) == from_skops.model_copy(update={"metadata": {}})


def write_payload(tmp_path: Path, code: str, name: str = "model.pkl") -> Path:
    (tmp_path / name).write_bytes(pickle.dumps(Payload(code)))
    return tmp_path / name


@pytest.mark.functional
def test_pickle_runs_only_in_the_probe_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    witness = tmp_path / "witness"
    witness.mkdir()
    monkeypatch.chdir(tmp_path)
    code = (
        "__import__('pathlib').Path("
        f"{str(witness)!r}, str(__import__('os').getpid())).write_text(__import__('os').getcwd())"
    )
    path = write_payload(tmp_path, code)
    with pytest.raises(ArtifactError, match=r"model\.pkl holds a builtins\.int, not a scikit-learn"):
        inspect_pickle(path, "model.pkl", cfg(allow_pickle=True))
    (record,) = witness.iterdir()
    assert int(record.name) != os.getpid()
    probe_cwd = Path(record.read_text())
    assert probe_cwd != tmp_path and not probe_cwd.exists()  # a throw-away directory


@pytest.mark.functional
def test_pickle_printing_to_stdout_cannot_forge_the_contract(tmp_path: Path) -> None:
    code = (
        '(print(\'{"framework": "onnx"}\'), '
        "__import__('sklearn.dummy', fromlist=['_']).DummyClassifier().fit([[0], [1]], [0, 1]))[1]"
    )
    contract = inspect_pickle(write_payload(tmp_path, code), "model.pkl", cfg(allow_pickle=True))
    assert contract.framework == "sklearn"
    assert contract.model_type == "sklearn.dummy.DummyClassifier"
    assert contract.classes == (0, 1)


@pytest.mark.functional
def test_pickle_failure_reports_the_probe_error(tmp_path: Path) -> None:
    path = write_payload(tmp_path, "exec('raise RuntimeError(\"boom\")')")
    with pytest.raises(ArtifactError, match=r"could not be loaded in isolation: RuntimeError: boom$"):
        inspect_pickle(path, "model.pkl", cfg(allow_pickle=True))


@pytest.mark.functional
def test_pickle_memory_is_capped(tmp_path: Path) -> None:
    path = write_payload(tmp_path, "bytearray(4 * 1024**3)")
    with pytest.raises(ArtifactError, match="MemoryError"):
        inspect_pickle(path, "model.pkl", cfg(allow_pickle=True))


@pytest.mark.functional
def test_pickle_timeout(tmp_path: Path) -> None:
    path = write_payload(tmp_path, "__import__('time').sleep(60)")
    start = time.monotonic()
    with pytest.raises(ArtifactError, match=r"took longer than 1\.5 s and was stopped"):
        inspect_pickle(path, "model.pkl", cfg(allow_pickle=True), timeout_s=1.5)
    assert time.monotonic() - start < 15
