"""The daemonless builder against a real registry (Debian's docker-registry with htpasswd auth on) and its
images pulled and run by the real docker engine, the way Lambda runs them.

The engine is used only to run what was built and to hand over the local base (``docker save``); the build
itself talks to nothing but the registry."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.docker import PushError
from chalicelib.docker.builder import DockerImageBuilder
from chalicelib.docker.registry import start_registry, stop_registry
from chalicelib.local.runtime_api import RuntimeApiServer
from chalicelib.oci.base import ensure_local_base
from chalicelib.oci.builder import OciImageBuilder
from chalicelib.oci.registry import RegistryClient
from chalicelib.services.intake import config_file_for_dir
from tests.functional.test_images import EVENTS, EXAMPLES, _comparable, _retrained, _run_lambda_like, _stop

pytestmark = [pytest.mark.docker, pytest.mark.functional]
USER, PASSWORD = "modelport", "s3cr3t-registry"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, engine: Any) -> Iterator[str]:
    import bcrypt

    data = tmp_path_factory.mktemp("registry")
    htpasswd = data / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode()}\n")
    port = _free_port()
    address = start_registry(port, data, htpasswd=htpasswd)
    ensure_local_base(address, "3.11", lambda _: None, client=engine, username=USER, password=PASSWORD)
    engine.login(username=USER, password=PASSWORD, registry=address)
    yield address
    stop_registry(port, data)


class _Login:
    def auth_config(self) -> dict[str, str]:
        return {"username": USER, "password": PASSWORD, "serveraddress": ""}


class _Host:
    """The registry as a RepositoryHost: repositories exist on push; every push logs in."""

    def __init__(self, address: str) -> None:
        self.address = address

    def ensure_repository(self, name: str) -> str:
        return f"{self.address}/{name}"

    def authorization(self) -> _Login:
        return _Login()


@pytest.fixture(scope="module")
def oci(registry: str) -> OciImageBuilder:
    return OciImageBuilder(registry, repositories=_Host(registry))


def _answers(engine: Any, image: str, events: list[dict[str, Any]]) -> tuple[list[Any], str]:
    with RuntimeApiServer(function_name="modelport-test") as server:
        container = _run_lambda_like(engine, image, server)
        try:
            found = []
            for event in events:
                result = server.invoke(event, timeout=90)
                assert result.error is None, result.payload
                found.append(_comparable(json.loads(result.payload)))
        finally:
            logs = _stop(container)
    return found, logs


@pytest.mark.parametrize("name", ["iris-onnx", "digits-onnx"])
def test_the_daemonless_image_answers_as_the_docker_built_one(
    name: str, engine: Any, oci: OciImageBuilder, registry: str
) -> None:
    src = EXAMPLES / name
    doc = config_file_for_dir(src)
    made = oci.build_image(doc, src, lambda _: None)
    assert made.reference.startswith(f"{registry}/modelport-{name}@sha256:")
    engine.images.pull(made.association.image_uri, auth_config=_Login().auth_config())
    ours, logs = _answers(engine, made.association.image_uri, EVENTS[name])
    docker_built = DockerImageBuilder(engine).build_image(doc, src, lambda _: None)
    theirs, _ = _answers(engine, docker_built.association.image_uri, EVENTS[name])
    assert ours == theirs, logs
    info = engine.api.inspect_image(made.association.image_uri)
    assert info["Config"]["User"] == "1000:1000"
    assert info["Config"]["Labels"]["dev.modelport.config-digest"] == doc.digest
    assert info["Config"]["Entrypoint"] == ["/opt/env/bin/python", "-m", "awslambdaric"]


def test_the_same_inputs_give_the_same_digest_on_a_fresh_cache(
    oci: OciImageBuilder, registry: str, tmp_path: Path
) -> None:
    src = EXAMPLES / "iris-onnx"
    doc = config_file_for_dir(src)
    first = oci.build_image(doc, src, lambda _: None)
    # Another machine: no layer cache (the wheels come from the shared wheelhouse cache).
    cache = tmp_path / "cache"
    shutil.copytree(oci.cache_dir / "wheels", cache / "wheels")
    fresh = OciImageBuilder(registry, repositories=_Host(registry), cache_dir=cache)
    second = fresh.build_image(doc, src, lambda _: None)
    assert second.environment_built
    assert second.association.image_digest == first.association.image_digest
    assert second.uploaded == ()


def test_a_new_version_uploads_only_its_model_layer(
    oci: OciImageBuilder, registry: str, tmp_path: Path
) -> None:
    original = EXAMPLES / "iris-onnx"
    first = oci.build_image(config_file_for_dir(original), original, lambda _: None)
    src = _retrained(tmp_path)
    second = oci.build_image(config_file_for_dir(src, version=2), src, lambda _: None)
    client = RegistryClient(registry, username=USER, password=PASSWORD)
    before = json.loads(client.get_manifest("modelport-iris-onnx", "v1")[0])["layers"]
    after = json.loads(client.get_manifest("modelport-iris-onnx", "v2")[0])["layers"]
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a["digest"] != b["digest"]]
    assert changed == [len(after) - 1]
    # The model layer and the image config: nothing of the base, the environment or the code.
    assert set(second.uploaded) == {after[-1]["digest"], _config_digest(client, "v2")}
    assert first.association.image_digest != second.association.image_digest


def _config_digest(client: RegistryClient, tag: str) -> str:
    return str(json.loads(client.get_manifest("modelport-iris-onnx", tag)[0])["config"]["digest"])


def test_the_registry_refuses_a_push_without_credentials(registry: str, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    anonymous = RegistryClient(registry)
    with pytest.raises(PushError, match=r"401|credentials"):
        anonymous.push_blob("modelport-x", "sha256:" + "0" * 64, blob)
    wrong = RegistryClient(registry, username=USER, password="wrong")
    with pytest.raises(PushError, match=r"401|credentials"):
        wrong.blob_exists("modelport-x", "sha256:" + "0" * 64)


def test_modelport_build_push_needs_no_docker_engine(
    oci: OciImageBuilder, registry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from chalicelib.cli import cli

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("MODELPORT_REGISTRY_USER", USER)
    monkeypatch.setenv("MODELPORT_REGISTRY_PASSWORD", PASSWORD)
    result = CliRunner().invoke(cli, ["build", str(EXAMPLES / "iris-onnx"), "--push", registry])
    assert result.exit_code == 0, result.output
    expected = oci.build_image(config_file_for_dir(EXAMPLES / "iris-onnx"), EXAMPLES / "iris-onnx", print)
    assert result.stdout.strip() == expected.reference


def test_a_function_runs_the_image_its_tag_names_in_the_registry_not_an_older_local_copy(
    engine: Any, oci: OciImageBuilder, tmp_path: Path
) -> None:
    """A tag pushed again (a local stack started afresh reuses ``v1``) resolves as Lambda resolves it, in
    the registry, when the function is created."""
    from chalicelib.local.launchers import ContainerLauncher

    original = EXAMPLES / "iris-onnx"
    first = oci.build_image(config_file_for_dir(original), original, lambda _: None)
    engine.images.pull(first.association.image_uri, auth_config=_Login().auth_config())
    src = _retrained(tmp_path)
    again = oci.build_image(config_file_for_dir(src), src, lambda _: None)  # v1 again, another image
    assert again.association.image_uri == first.association.image_uri
    assert again.association.image_digest != first.association.image_digest
    sha = ContainerLauncher(engine).code_sha256(again.association.image_uri)
    assert again.association.image_digest == f"sha256:{sha}"
