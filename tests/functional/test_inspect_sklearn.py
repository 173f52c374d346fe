"""scikit-learn inspector: pickles opened in the docker sandbox (the in-process inspector is in
tests/unit/test_inspect_sklearn.py)."""

from __future__ import annotations

import pickle
import re
import time
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from chalicelib.core.errors import ArtifactError
from chalicelib.docker.sandbox import DockerSandbox
from chalicelib.inspect import inspect_model
from chalicelib.inspect.sklearn import inspect_pickle
from tests.unit.test_inspect_sklearn import IRIS, cfg, skops_contract


class Payload:
    """Unpickling this runs ``code``: the stand-in for a malicious or misbehaving pickle."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (self.code,))


@pytest.mark.docker
def test_pickle_is_inspected_like_skops(tmp_path: Path, docker_sandbox: DockerSandbox) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(IRIS.data, IRIS.target_names[IRIS.target])
    joblib.dump(model, tmp_path / "model.joblib")
    from_pickle = inspect_model(tmp_path, cfg(allow_pickle=True), docker_sandbox)
    (tmp_path / "model.joblib").unlink()
    from_skops = skops_contract(tmp_path, model)
    assert from_pickle.metadata["format"] == "pickle"
    assert from_pickle.model_copy(update={"metadata": {}}) == from_skops.model_copy(update={"metadata": {}})


def write_payload(tmp_path: Path, code: str, name: str = "model.pkl") -> Path:
    (tmp_path / name).write_bytes(pickle.dumps(Payload(code)))
    return tmp_path / name


@pytest.mark.docker
def test_pickle_runs_only_in_the_sandbox(tmp_path: Path, docker_sandbox: DockerSandbox) -> None:
    witness = tmp_path / "witness"
    code = (
        f"(__import__('os').makedirs({str(tmp_path)!r}, exist_ok=True), "
        f"__import__('pathlib').Path({str(witness)!r}).write_text('ran'), 7)[2]"
    )
    path = write_payload(tmp_path, code)
    with pytest.raises(ArtifactError, match=r"^model\.pkl holds a builtins\.int, not a scikit-learn"):
        inspect_pickle(path, "model.pkl", cfg(allow_pickle=True), docker_sandbox)
    assert not witness.exists()  # it ran, in the container's own /tmp/pytest-... (gone with it)


@pytest.mark.docker
def test_pickle_printing_to_stdout_cannot_forge_the_contract(
    tmp_path: Path, docker_sandbox: DockerSandbox
) -> None:
    code = (
        '(print(\'{"contract": {"framework": "onnx"}}\'), '
        "__import__('sklearn.dummy', fromlist=['_']).DummyClassifier().fit([[0], [1]], [0, 1]))[1]"
    )
    contract = inspect_pickle(
        write_payload(tmp_path, code), "model.pkl", cfg(allow_pickle=True), docker_sandbox
    )
    assert contract.framework == "sklearn"
    assert contract.model_type == "sklearn.dummy.DummyClassifier"
    assert contract.classes == (0, 1)


@pytest.mark.docker
def test_pickle_failure_is_a_fixed_message(tmp_path: Path, docker_sandbox: DockerSandbox) -> None:
    path = write_payload(tmp_path, "exec('raise RuntimeError(\"boom\")')")
    with pytest.raises(ArtifactError) as caught:
        inspect_pickle(path, "model.pkl", cfg(allow_pickle=True), docker_sandbox)
    assert re.fullmatch(
        r"model\.pkl could not be loaded in the sandbox \(error id [0-9a-f]{12}\) \(check that it is a plain "
        r"fitted estimator saved with the environment's packages\)",
        str(caught.value),
    )


@pytest.mark.docker
def test_pickle_memory_is_capped(tmp_path: Path, engine: Any) -> None:
    from chalicelib.docker.builder import DockerImageBuilder

    small = DockerSandbox(DockerImageBuilder(engine), memory="384m")
    path = write_payload(tmp_path, "bytearray(2 * 1024**3)")
    with pytest.raises(
        ArtifactError, match=r"^model\.pkl (ran out of memory|could not be loaded) in the sandbox"
    ):
        inspect_pickle(path, "model.pkl", cfg(allow_pickle=True), small)


@pytest.mark.docker
def test_pickle_timeout(tmp_path: Path, engine: Any, docker_sandbox: DockerSandbox) -> None:
    from chalicelib.docker.builder import DockerImageBuilder

    quick = DockerSandbox(DockerImageBuilder(engine), timeout_s=2)
    path = write_payload(tmp_path, "__import__('time').sleep(600)")
    start = time.monotonic()
    with pytest.raises(ArtifactError, match=r"^model\.pkl timed out in the sandbox \(error id"):
        inspect_pickle(path, "model.pkl", cfg(allow_pickle=True), quick)
    assert time.monotonic() - start < 60
    assert engine.containers.list(all=True, filters={"label": "dev.modelport.probe"}) == []
