"""Hostile pickles through the real deployment service: tenant code runs only in the sandbox, and the
sandbox gives it no network, no host environment, no host /proc, no writable place but its scratch, and
nothing of it survives the probe. Without a sandbox (the memory/process twin), pickles are refused.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.config import parse_config
from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.errors import ArtifactError
from chalicelib.core.probe import ProbeRequest, read_result, sanitize
from chalicelib.core.records import Deployment, ModelRecord
from chalicelib.services.deployments import upload_key
from chalicelib.settings import Settings
from chalicelib.wiring import Container, deployment_service, memory_container

BUCKET = Settings().bundle_bucket
FIXED_REASON = re.compile(
    r"^model\.pkl (timed out|ran out of memory|could not be loaded|returned no valid contract|crashed) "
    r"in the sandbox \(error id [0-9a-f]{12}\) \(check that"
)


class Hostile:
    """Unpickling this runs ``code`` (Python statements) and returns what it leaves in ``result``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"(lambda g: (exec({self.code!r}, g), g.get('result'))[1])({{}})",))


def hostile_pickle(code: str) -> bytes:
    return pickle.dumps(Hostile(code))


def bundle(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class World:
    """The deployment service on memory twins, with the sandbox under test."""

    def __init__(self, tmp_path: Path, sandbox: Any | None = None) -> None:
        self.c: Container = memory_container()
        if sandbox is not None:
            self.c.sandbox = sandbox
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        self.service = deployment_service(self.c, scratch=scratch)

    def deploy(self, name: str, pkl: bytes) -> Deployment:
        config = f"name: {name}\nallow_pickle: true\n".encode()
        self.c.models.create_model(ModelRecord(name=name, owner="acct-1", created_at=self.c.clock()))
        version = self.c.models.reserve_version(name, lambda v: upload_key(name, v), self.c.clock())
        info = self.c.artifacts.put(version.upload_key, bundle({"modelport.yaml": config, "model.pkl": pkl}))
        dep = self.service.handle_s3_object(BUCKET, version.upload_key, info.etag, info.size_bytes)
        assert dep is not None
        return dep

    def manifest(self, dep: Deployment) -> ModelConfigFile:
        stored = self.c.models.get_version(dep.model_name, dep.version).manifest
        assert stored is not None
        return ModelConfigFile.model_validate_json(stored)


def test_without_a_sandbox_a_pickle_is_refused_and_never_opened(tmp_path: Path) -> None:
    host_file = tmp_path / "written-by-the-pickle"
    world = World(tmp_path)  # the memory container: no sandbox, as in process mode
    dep = world.deploy("canary", hostile_pickle(f"open({str(host_file)!r}, 'w').write('ran')"))
    assert dep.state == "FAILED"
    assert dep.reason == (
        "model.pkl is a pickle: it can only be opened in a sandbox (a docker engine locally, the probe "
        "function on AWS), and none is configured here (convert it to .skops with skops' default types, "
        "or deploy where a sandbox runs)"
    )
    assert not host_file.exists()


# ----------------------------------------------------------------------------- what the parent accepts


def test_the_parent_accepts_only_a_contract_or_a_known_error_code() -> None:
    good = {
        "contract": {
            "framework": "sklearn",
            "inputs": {"tensors": [{"name": "input", "datatype": "FP64", "shape": ["batch", 4]}]},
            "outputs": {"tensors": [{"name": "label", "datatype": "INT64", "shape": ["batch"]}]},
        }
    }
    assert read_result(json.dumps(good).encode(), "model.pkl").framework == "sklearn"
    forged = [
        b"",
        b"not json",
        b'{"framework": "sklearn"}',  # a bare contract: not the document
        json.dumps({**good, "extra": 1}).encode(),
        json.dumps({"error": {"code": "pwned", "message": "MODELPORT_ADMIN_KEY=s3cr3t-key"}}).encode(),
        json.dumps({"error": {"code": "not_loadable", "message": "anything the probe says"}}).encode(),
        b"[" * 100_000,
        b" " * (1024 * 1024 + 1),
    ]
    for raw in forged:
        with pytest.raises(ArtifactError) as caught:
            read_result(raw, "model.pkl")
        assert FIXED_REASON.match(str(caught.value)), str(caught.value)
        assert "s3cr3t" not in str(caught.value) and "anything" not in str(caught.value)
    with pytest.raises(ArtifactError, match=r"^model\.pkl holds an estimator that is not fitted \(fit it"):
        read_result(b'{"error": {"code": "not_fitted", "message": "ignored"}}', "model.pkl")
    with pytest.raises(ArtifactError, match=r"^model\.pkl holds a builtins\.int, not a scikit-learn"):
        read_result(b'{"error": {"code": "not_an_estimator", "type": "builtins.int"}}', "model.pkl")
    with pytest.raises(ArtifactError, match=r"^model\.pkl holds a an object, not") as caught:
        read_result(b'{"error": {"code": "not_an_estimator", "type": "a b=c; rm -rf /"}}', "model.pkl")


def test_the_logged_excerpt_is_bounded_printable_and_has_no_env_like_tokens() -> None:
    text = (
        "Traceback\x1b[31m\nAWS_SECRET_ACCESS_KEY=wJalrXUt ValueError: bad \u00e9 value TOKEN=abc "
        + "y" * 900
    )
    out = sanitize(text)
    assert len(out) <= 300 and out.isascii() and out.isprintable()
    assert "wJalrXUt" not in sanitize(text[:200]) and "abc" not in sanitize(text[:200])
    assert "ValueError: bad" in sanitize(text[:200])


def test_the_refusing_twin_names_the_artifact_and_why() -> None:
    from chalicelib.core.errors import SandboxUnavailable
    from chalicelib.core.probe import NoSandbox

    request = ProbeRequest(
        config=parse_config({"name": "m", "trusted_types": ["sklearn.tree._tree.Tree"]}),
        artifact=Path("model.skops"),
        rel="model.skops",
        format="skops",
    )
    with pytest.raises(
        SandboxUnavailable, match=r"^model\.skops is a \.skops file with trusted_types: it can"
    ):
        NoSandbox().probe(request)


# ----------------------------------------------------------------------------- the CLI


def _pickle_dir(tmp_path: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    model = tmp_path / "model"
    model.mkdir()
    iris = load_iris()
    fitted = LogisticRegression(max_iter=300).fit(iris.data, iris.target)
    (model / "model.pkl").write_bytes(pickle.dumps(fitted))
    (model / "modelport.yaml").write_text("name: m\nallow_pickle: true\n")
    return model


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[3]
    return subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root), **env},
        timeout=600,
        check=False,
    )


def test_cli_without_an_engine_refuses_a_pickle_in_one_line(tmp_path: Path) -> None:
    model = _pickle_dir(tmp_path)
    result = _cli("manifest", str(model), DOCKER_HOST=f"unix://{tmp_path}/no-such-docker.sock")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: model.pkl is a pickle: it can only be opened in a sandbox (a docker engine locally, the "
        "probe function on AWS), and no docker engine answers here (convert it to .skops with skops' "
        "default types, or deploy where a sandbox runs)"
    ]
