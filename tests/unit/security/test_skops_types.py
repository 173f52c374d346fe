"""skops ``trusted_types``: only classes of the model libraries, refused at config time naming the type; a
``.skops`` file that needs a trusted type is opened only in the sandbox, never in process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.tree import DecisionTreeRegressor

from chalicelib.core.config import parse_config, parse_config_yaml
from chalicelib.core.errors import ConfigError, SandboxUnavailable, UnsafeArtifact
from chalicelib.inspect import inspect_model
from tests.support import modelport_manifest

ROOT = Path(__file__).resolve().parents[3]
REFUSED = [
    "os.system",
    "posix.system",
    "nt.system",
    "subprocess.Popen",
    "sys.modules",
    "importlib.import_module",
    "functools.partial",
    "operator.attrgetter",
    "builtins.eval",
    "builtins.exec",
    "builtins.getattr",
    "builtins.object",
    "pickle.loads",
    "shutil.rmtree",
    "socket.socket",
    "ctypes.CDLL",
    "runpy.run_path",
    "code.InteractiveInterpreter",
    "types.FunctionType",
    "numpy.load",
    "numpy.testing.Tester",
    "scipy.io.loadmat",
    "sklearn.utils.estimator_html_repr",
    "eval",
    "sklearn.tree._tree.Tree; import os",
]


@pytest.mark.parametrize("name", REFUSED)
def test_anything_but_a_model_library_class_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"name": "m", "trusted_types": ["sklearn.tree._tree.Tree", name]})
    message = str(caught.value)
    assert message.startswith(f"modelport.yaml: trusted_types: {name!r} is refused: ")
    assert message.endswith(
        "trusted_types may name only classes (CapWords names) of scikit-learn, numpy, "
        "scipy, LightGBM or XGBoost (or collections.OrderedDict), never builtins or functions"
    )


@pytest.mark.parametrize(
    "name",
    [
        "sklearn.tree._tree.Tree",
        "sklearn.svm.SVC",
        "numpy.random.Generator",
        "lightgbm.basic.Booster",
        "xgboost.core.Booster",
        "collections.OrderedDict",
    ],
)
def test_classes_of_the_model_libraries_are_accepted(name: str) -> None:
    assert parse_config({"name": "m", "trusted_types": [name]}).trusted_types == (name,)


def test_a_huge_type_list_or_name_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match=r"at most 50 trusted_types"):
        parse_config({"name": "m", "trusted_types": ["sklearn.A"] * 51})
    with pytest.raises(ConfigError) as caught:
        parse_config_yaml("name: m\ntrusted_types: [os." + "a" * 100_000 + "]\n")
    assert len(str(caught.value)) < 500


def test_cli_manifest_refuses_os_system_at_once_and_nothing_runs(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    canary = tmp_path / "canary"
    sio.dump({"call": os.system, "arg": f"touch {canary}"}, model / "model.skops")
    (model / "modelport.yaml").write_text("name: m\ntrusted_types: [os.system]\n")
    result, elapsed = modelport_manifest(model)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {model}/modelport.yaml: trusted_types: 'os.system' is refused")
    assert not canary.exists()
    # The same command failing on an empty model directory costs the interpreter and the imports; the
    # refusal adds less than a second to that (it happens before any artifact is read).
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "modelport.yaml").write_text("name: m\n")
    baseline, baseline_s = modelport_manifest(empty)
    assert baseline.returncode == 2 and "no model file found" in baseline.stderr
    assert elapsed < baseline_s + 1.0


class Doubler(RegressorMixin, BaseEstimator):
    """A user-defined estimator: its class is the tenant's code."""

    def fit(self, x: Any, y: Any) -> Doubler:
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x: Any) -> Any:
        return 2 * x.sum(axis=1)


def test_the_refusal_of_untrusted_types_no_longer_invites_trusting_them(tmp_path: Path) -> None:
    sio.dump(Doubler().fit(np.zeros((3, 2)), [0, 1, 2]), tmp_path / "model.skops")
    with pytest.raises(UnsafeArtifact) as caught:
        inspect_model(tmp_path, parse_config({"name": "m"}))
    message = str(caught.value)
    assert message.startswith(
        "model.skops contains types skops does not trust by default: tests.unit.security."
    )
    assert "if you trust them" not in message
    assert "may list only classes of scikit-learn, numpy, scipy, LightGBM and XGBoost)" in message
    with pytest.raises(ConfigError, match=r"'tests\.unit\.security\.test_skops_types\.Doubler' is refused"):
        parse_config({"name": "m", "trusted_types": [f"{Doubler.__module__}.Doubler"]})


def _tree_skops(tmp_path: Path) -> Any:
    x = np.arange(20.0).reshape(10, 2)
    sio.dump(DecisionTreeRegressor(max_depth=2).fit(x, np.c_[x[:, 0], -x[:, 1]]), tmp_path / "model.skops")
    # allow_pickle only so this shares the pickle tests' environment image (one image build in CI)
    return parse_config({"name": "m", "trusted_types": ["sklearn.tree._tree.Tree"], "allow_pickle": True})


def test_an_allowlisted_non_default_type_is_never_opened_in_process(tmp_path: Path) -> None:
    config = _tree_skops(tmp_path)
    with pytest.raises(
        SandboxUnavailable, match=r"^model\.skops is a \.skops file with trusted_types: it can "
    ):
        inspect_model(tmp_path, config)  # no sandbox here: refused, not loaded
