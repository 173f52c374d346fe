"""scikit-learn inspector: default-type .skops in process; pickles and trusted types only in the sandbox."""

from __future__ import annotations

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
from chalicelib.core.errors import ArtifactError, ConfigError, SandboxUnavailable, UnsafeArtifact
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import Tensors, TensorSpec
from chalicelib.inspect import inspect_model
from chalicelib.runtime.contract import contract_from_estimator

IRIS = load_iris()
DIABETES = load_diabetes()


class Doubler(RegressorMixin, BaseEstimator):
    """A user-defined estimator: skops must not load it unless the config trusts it."""

    def fit(self, x: Any, y: Any) -> Doubler:
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x: Any) -> Any:
        return 2 * x.sum(axis=1)


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
    # a tree's .skops needs a trusted type, so only the sandbox opens it; the contract is the same function's
    contract = contract_from_estimator(tree, rel="model.skops", fmt="skops")
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
    with pytest.raises(UnsafeArtifact, match=rf"{name}.*may list only classes of scikit-learn, numpy, scipy"):
        skops_contract(tmp_path, model)
    with pytest.raises(ConfigError, match=rf"{name!r} is refused: tests is not a model library"):
        cfg(trusted_types=[name])
    sio.dump(DecisionTreeRegressor(max_depth=2).fit(DIABETES.data, DIABETES.target), tmp_path / "model.skops")
    with pytest.raises(SandboxUnavailable, match=r"model\.skops is a \.skops file with trusted_types"):
        inspect_model(tmp_path, cfg(trusted_types=["sklearn.tree._tree.Tree"]))


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


def test_pickle_without_a_sandbox_is_refused(tmp_path: Path) -> None:
    joblib.dump(LinearRegression().fit(IRIS.data, IRIS.target), tmp_path / "model.joblib")
    with pytest.raises(
        SandboxUnavailable, match=r"^model\.joblib is a pickle: it can only be opened in a sandbox"
    ):
        inspect_model(tmp_path, cfg(allow_pickle=True))
