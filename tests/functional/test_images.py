"""Real images from the examples, run the way Lambda runs them, against our Runtime API server.

Each example is built once per session (the environment images are cached in the engine across sessions,
the wheels in ``~/.cache/modelport``), then run with Lambda's constraints - host network, read-only root,
a tmpfs ``/tmp``, uid 1000, 512 MB - and must answer exactly as the in-process runtime answers the same
events. Without a docker engine these tests skip, except in CI (``$CI`` set), where they fail.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import socket
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.errors import ConfigError
from chalicelib.docker import BuildError
from chalicelib.docker.builder import BuildReport, DockerImageBuilder
from chalicelib.docker.dockerfile import Dockerfile
from chalicelib.docker.registry import answers, start_registry, stop_registry
from chalicelib.local.runtime_api import RuntimeApiServer
from chalicelib.memory.stores import MemoryAssociationStore
from chalicelib.runtime.handler import load
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.services.intake import config_file_for_dir

pytestmark = [pytest.mark.docker, pytest.mark.functional]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUILT = ("iris-onnx", "iris-skops", "digits-onnx", "breast-cancer-xgboost")
LAMBDA_LIKE: dict[str, Any] = {
    "network_mode": "host",
    "read_only": True,
    "tmpfs": {"/tmp": "rw,size=512m"},
    "user": "1000:1000",
    "mem_limit": "512m",
}


def _json_event(body: Any, accept: str = "application/json") -> dict[str, Any]:
    return {
        "body": json.dumps(body),
        "body_encoding": "utf8",
        "content_type": "application/json",
        "accept": accept,
    }


def _png_event(path: Path) -> dict[str, Any]:
    return {
        "body": base64.b64encode(path.read_bytes()).decode(),
        "body_encoding": "base64",
        "content_type": "image/png",
        "accept": "*/*",
    }


IRIS_EVENTS = [
    _json_event({"rows": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 4.2, 1.5]]}),
    _json_event(
        {"records": [{"sepal_length": 5.0, "sepal_width": 3.4, "petal_length": 1.5, "petal_width": 0.2}]}
    ),
    _json_event({"rows": [[1, 2, 3]]}),  # a client's mistake: the same 4xx from both
]


def _csv_event(path: Path, accept: str = "application/json") -> dict[str, Any]:
    return {"body": path.read_text(), "body_encoding": "utf8", "content_type": "text/csv", "accept": accept}


TUMOURS = EXAMPLES / "breast-cancer-xgboost" / "samples" / "tumours.csv"
EVENTS: dict[str, list[dict[str, Any]]] = {
    "breast-cancer-xgboost": [
        _csv_event(TUMOURS),
        _csv_event(TUMOURS, accept="image/png"),
        _json_event({"rows": [[1.0, 2.0]]}),  # 2 of its 30 features: the same 400 from both
    ],
    "iris-onnx": IRIS_EVENTS,
    "iris-skops": IRIS_EVENTS,
    "digits-onnx": [_png_event(p) for p in sorted((EXAMPLES / "digits-onnx" / "samples").glob("*.png"))],
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def builder(engine: Any) -> DockerImageBuilder:
    return DockerImageBuilder(engine)


class Built:
    """Builds each example at most once per session; ``log`` keeps every build's progress lines."""

    def __init__(self, builder: DockerImageBuilder) -> None:
        self.builder = builder
        self.reports: dict[str, BuildReport] = {}
        self.log: list[str] = []

    def __call__(self, name: str) -> BuildReport:
        if name not in self.reports:
            src = EXAMPLES / name
            start = time.perf_counter()
            self.reports[name] = self.builder.build_image(config_file_for_dir(src), src, self.log.append)
            print(f"\nbuilt {name} in {time.perf_counter() - start:.1f} s")
        return self.reports[name]


@pytest.fixture(scope="session")
def built(builder: DockerImageBuilder) -> Built:
    return Built(builder)


@pytest.fixture
def server() -> Iterator[RuntimeApiServer]:
    with RuntimeApiServer(function_name="modelport-test") as srv:
        yield srv


def _run_lambda_like(engine: Any, image: str, server: RuntimeApiServer) -> Any:
    return engine.containers.run(
        image,
        detach=True,
        environment={
            "AWS_LAMBDA_RUNTIME_API": server.url,
            "AWS_LAMBDA_FUNCTION_NAME": "modelport-test",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            # The same BLAS kernel as this process (some machines pin OPENBLAS_CORETYPE): answers are
            # compared to the last bit, and another kernel rounds a dot product differently.
            **{k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
        },
        **LAMBDA_LIKE,
    )


def _stop(container: Any) -> str:
    logs = container.logs().decode(errors="replace")
    container.remove(force=True)
    return logs


def _comparable(response: dict[str, Any]) -> dict[str, Any]:
    """A runtime response without its timings and runs, the body parsed when it is JSON."""
    response = {k: v for k, v in response.items() if k not in ("timings", "runs")}
    if response.get("content_type", "").startswith("application/json"):
        response["body"] = json.loads(response["body"])
    return response


# --------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("name", BUILT)
def test_the_container_answers_as_the_in_process_runtime(
    name: str, engine: Any, built: Built, server: RuntimeApiServer, tmp_path: Path
) -> None:
    report = built(name)
    src = EXAMPLES / name
    runtime = load(prepare_model_dir(src, config_file_for_dir(src), tmp_path / name))
    expected = [_comparable(runtime.handle(event)) for event in EVENTS[name]]

    start = time.perf_counter()
    container = _run_lambda_like(engine, report.association.image_uri, server)
    try:
        answers_ = []
        for event in EVENTS[name]:
            result = server.invoke(event, timeout=90)
            assert result.error is None, result.payload
            answers_.append(_comparable(json.loads(result.payload)))
            if len(answers_) == 1:
                print(f"\n{name}: docker run to first response {time.perf_counter() - start:.2f} s")
    finally:
        logs = _stop(container)
    assert answers_ == expected, logs
    assert expected[0]["status"] == 200
    if name.startswith(("iris", "breast-cancer")):
        assert expected[-1]["status"] == 400


def test_images_have_four_layers_and_the_lambda_contract(engine: Any, built: Built) -> None:
    report = built("iris-onnx")
    info = engine.api.inspect_image(report.association.image_uri)
    config = info["Config"]
    assert report.layers == len(info["RootFS"]["Layers"]) == 4  # base, venv, runtime code, model
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["/opt/env/bin/python", "-m", "awslambdaric"]
    assert config["Cmd"] == ["chalicelib.runtime.handler.handler"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HOME"] == "/tmp" and env["MPLCONFIGDIR"] == "/tmp/matplotlib"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["MODELPORT_MODEL_DIR"] == "/var/task/model"
    manifest = config_file_for_dir(EXAMPLES / "iris-onnx")
    labels = config["Labels"]
    assert labels["dev.modelport.model"] == "iris-onnx"
    assert labels["dev.modelport.version"] == "1"
    assert labels["dev.modelport.config-digest"] == manifest.digest
    assert labels["dev.modelport.fingerprint"] == manifest.environment.fingerprint
    assert report.association.size_bytes == info["Size"]
    assert report.association.image_digest == info["Id"]


PROBE = """
import json, os, sys
out = {"uid": os.getuid(), "gid": os.getgid(), "home": os.environ["HOME"]}
for path in ("/var/task/x", "/var/task/model/x", "/var/task/chalicelib/x", "/opt/env/x", "/x", "/tmp/x"):
    try:
        with open(path, "w") as fh:
            fh.write("x")
        out[path] = "written"
    except OSError as exc:
        out[path] = exc.errno
out["pyc"] = sum(1 for _ in os.scandir("/var/task/chalicelib/core/__pycache__"))
print(json.dumps(out))
"""


def test_the_root_is_read_only_and_the_user_is_not_root(engine: Any, built: Built) -> None:
    image = built("iris-onnx").association.image_uri
    run = {**LAMBDA_LIKE, "entrypoint": ["/opt/env/bin/python", "-c", PROBE], "remove": True}
    result = json.loads(engine.containers.run(image, **run).decode().strip().splitlines()[-1])
    assert (result["uid"], result["gid"], result["home"]) == (1000, 1000, "/tmp")
    assert result["/tmp/x"] == "written"
    for path in ("/var/task/x", "/var/task/model/x", "/var/task/chalicelib/x", "/opt/env/x", "/x"):
        assert result[path] == 30, f"{path}: {result[path]}"  # EROFS
    assert result["pyc"] > 5  # compiled at build time: nothing to compile on a read-only root
    # Even on a writable root, the code and the model belong to root: uid 1000 cannot change them.
    run["read_only"] = False
    result = json.loads(engine.containers.run(image, **run).decode().strip().splitlines()[-1])
    for path in ("/var/task/model/x", "/var/task/chalicelib/x", "/opt/env/x"):
        assert result[path] == 13, f"{path}: {result[path]}"  # EACCES


def _retrained(tmp_path: Path, name: str | None = None) -> Path:
    """A copy of iris-onnx whose model file changed (a nudged coefficient), optionally renamed."""
    import onnx

    dest = tmp_path / (name or "iris-onnx")
    shutil.copytree(EXAMPLES / "iris-onnx", dest)
    model = onnx.load(str(dest / "model.onnx"))
    nudged = False
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "coefficients" and attr.floats:
                attr.floats[0] += 0.001
                nudged = True
    assert nudged, "no LinearClassifier coefficients found in the iris model"
    onnx.save(model, str(dest / "model.onnx"))
    if name is not None:
        config = dest / "modelport.yaml"
        config.write_text(config.read_text().replace("name: iris-onnx", f"name: {name}"))
    return dest


def test_a_new_model_file_changes_only_the_last_layer(
    engine: Any, built: Built, builder: DockerImageBuilder, tmp_path: Path
) -> None:
    built("iris-onnx")  # the environment image exists
    # Built again here (a cache hit unless the runtime code changed since the session's build).
    original = EXAMPLES / "iris-onnx"
    first = builder.build_image(config_file_for_dir(original), original, lambda line: None)
    src = _retrained(tmp_path)
    manifest = config_file_for_dir(src, version=2)
    assert (
        manifest.environment.fingerprint
        == config_file_for_dir(EXAMPLES / "iris-onnx").environment.fingerprint
    )
    start = time.perf_counter()
    second = builder.build_image(manifest, src, lambda line: None)
    elapsed = time.perf_counter() - start
    print(f"\nrebuild after a model-only change: {elapsed:.2f} s")
    assert not second.environment_built
    before = engine.api.inspect_image(first.image_id)["RootFS"]["Layers"]
    after = engine.api.inspect_image(second.image_id)["RootFS"]["Layers"]
    assert len(before) == len(after)
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [len(after) - 1]
    assert elapsed < 30


def test_models_with_the_same_environment_share_one_environment_image(
    built: Built, builder: DockerImageBuilder, tmp_path: Path
) -> None:
    iris = built("iris-onnx")
    src = _retrained(tmp_path, name="iris-onnx-twin")
    manifest = config_file_for_dir(src)
    twin = builder.build_image(manifest, src, lambda line: None)
    assert not twin.environment_built
    assert twin.environment_image == iris.environment_image
    assert twin.association.image_uri == "modelport/iris-onnx-twin:v1"
    # Through the ImageBuilder port, recording the shared image in the association store.
    store = MemoryAssociationStore()
    recording = DockerImageBuilder(builder.client, associations=store, clock=lambda: "2026-01-01T00:00:00Z")
    association = recording.build(manifest, src, lambda line: None)
    assert association == twin.association
    shared = store.get_environment_image(manifest.environment.fingerprint)
    assert shared is not None and shared.image_uri == iris.environment_image
    assert shared.size_bytes == iris.environment_size_bytes and shared.image_digest.startswith("sha256:")
    # Across the examples: equal environment fingerprints, one image; different ones, different images.
    images = {name: built(name).environment_image for name in BUILT}
    fingerprints = {name: config_file_for_dir(EXAMPLES / name).environment.fingerprint for name in BUILT}
    for a in BUILT:
        for b in BUILT:
            assert (fingerprints[a] == fingerprints[b]) == (images[a] == images[b]), (a, b)


# --------------------------------------------------------------------------- the engine's view of our text


def _context(dockerfile: Dockerfile) -> io.BytesIO:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        data = dockerfile.render().encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw.seek(0)
    return raw


NASTY_VALUES = [
    'quote " inside',
    "dollar $HOME and ${PATH} and $(id)",
    "back\\slash and trailing \\",
    "\\$ escaped already",
    "single ' quote",
    "ünïcødé ✓ 模型 \u00a0nbsp",
    "a=b c=d",
    "# not a comment",
    "",
]


def test_the_engine_reads_every_label_and_env_value_back_unchanged(
    engine: Any, builder: DockerImageBuilder, built: Built
) -> None:
    base = built("iris-onnx").base_image
    labels = {f"dev.modelport.test{i}": value for i, value in enumerate(NASTY_VALUES)}
    env = {f"MODELPORT_TEST{i}": value for i, value in enumerate(NASTY_VALUES)}
    dockerfile = Dockerfile().from_(base).label(labels).env(env)
    image_id = builder.run_build(
        _context(dockerfile), "modelport/test-labels:latest", lambda line: None, what="test"
    )
    try:
        config = engine.api.inspect_image(image_id)["Config"]
        assert {k: v for k, v in config["Labels"].items() if k.startswith("dev.modelport.test")} == labels
        got = dict(item.split("=", 1) for item in config["Env"])
        assert {k: got[k] for k in env} == env
    finally:
        engine.api.remove_image("modelport/test-labels:latest", force=True)


def test_a_failing_step_is_one_line_naming_the_step_and_its_output(
    builder: DockerImageBuilder, built: Built
) -> None:
    base = built("iris-onnx").base_image
    dockerfile = Dockerfile().from_(base).run(["/bin/sh", "-c", "echo about to fail; exit 3"])
    with pytest.raises(BuildError) as caught:
        builder.run_build(_context(dockerfile), "modelport/test-fail:latest", lambda line: None, what="test")
    message = str(caught.value)
    assert "\n" not in message
    assert "Step 2/2" in message and "about to fail" in message and "3" in message


def test_a_base_image_that_no_registry_has_is_a_clear_error(engine: Any, tmp_path: Path) -> None:
    from chalicelib.docker import BaseImageError

    with pytest.raises(BaseImageError, match="neither in the engine nor pullable"):
        DockerImageBuilder(engine, base_image="example.invalid/none/python:3.11").build_image(
            config_file_for_dir(EXAMPLES / "iris-onnx"), EXAMPLES / "iris-onnx", lambda line: None
        )
    with pytest.raises(ConfigError, match="image reference"):
        DockerImageBuilder(engine, base_image="python:3.11\nRUN id")


# --------------------------------------------------------------------------- registry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_push_to_a_local_registry_records_the_digest(engine: Any, built: Built, tmp_path: Path) -> None:
    built("iris-onnx")  # the environment image exists: only the model image is built and pushed
    port = _free_port()
    registry = start_registry(port, tmp_path / "registry")
    try:
        assert start_registry(port, tmp_path / "registry") == registry  # idempotent
        lines: list[str] = []
        pushed = DockerImageBuilder(engine, registry=registry).build_image(
            config_file_for_dir(EXAMPLES / "iris-onnx"), EXAMPLES / "iris-onnx", lines.append
        )
        assert pushed.pushed and pushed.association.image_uri == f"{registry}/modelport-iris-onnx:v1"
        assert pushed.association.image_digest.startswith("sha256:")
        request = urllib.request.Request(
            f"http://{registry}/v2/modelport-iris-onnx/manifests/v1",
            method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Docker-Content-Digest"] == pushed.association.image_digest
        assert any(line.startswith("push: ") for line in lines)
    finally:
        assert stop_registry(port, tmp_path / "registry")
        engine.api.remove_image(f"{registry}/modelport-iris-onnx:v1", force=True)
    assert not answers(port)
    assert not stop_registry(port, tmp_path / "registry")


# --------------------------------------------------------------------------- the CLI


def test_modelport_build_prints_uri_digest_size_and_layers(built: Built) -> None:
    from click.testing import CliRunner

    from chalicelib.cli import cli

    built("iris-onnx")  # the environment exists: the command only builds the (cached) model image
    result = CliRunner().invoke(cli, ["build", str(EXAMPLES / "iris-onnx")])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["image"].strip() == "modelport/iris-onnx:v1"
    assert lines["digest"].strip().startswith("sha256:")
    assert lines["layers"].strip() == "4"
    assert lines["size"].strip().endswith("MB")
    assert "(reused," in lines["environment"]
    assert "model: Step 3/6" in result.stderr

    refused = CliRunner().invoke(cli, ["build", str(EXAMPLES / "iris-onnx"), "--base-image", "Not An Image"])
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1 and "image reference" in refused.stderr
