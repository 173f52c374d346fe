"""Shared fixtures: a moto server for the whole session, and fresh infrastructure for each test using it.

The server is a real HTTP endpoint, so the adapters run their boto3 calls unchanged (``endpoint_url`` is the
only difference from AWS) and threads in a test make truly concurrent requests.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.aws.infra import create_infrastructure, destroy_infrastructure
from chalicelib.local.edge.moto import patch_moto_dispatch, serialized
from chalicelib.settings import Settings

REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


class SerializedMotoServer:
    """moto's ``ThreadedMotoServer``, but moto handles one request at a time (``serialized``, the local
    stack's wrapper, here around every request: measured without it, duplicate version numbers in 2 of 10
    runs of the concurrency test).
    """

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        patch_moto_dispatch()
        app = serialized(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", 0, app, threaded=True)  # port 0: any free port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[None]:
    """Dummy credentials for the session (restored afterwards), so boto3 never finds real ones."""
    saved = {name: os.environ.get(name) for name in (*CREDENTIALS, "AWS_PROFILE")}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(CREDENTIALS)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def moto_server(aws_credentials: None) -> Iterator[str]:
    """The endpoint URL of a moto server on a free local port."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = SerializedMotoServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def aws_session(moto_server: str) -> boto3.session.Session:
    """One session for all tests: it caches the service models every new client would load again."""
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@dataclass(frozen=True)
class Infra:
    settings: Settings
    outputs: dict[str, str]
    session: boto3.session.Session

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.settings.endpoint_url)


def unique_settings(endpoint_url: str) -> Settings:
    """Settings naming resources no other test uses: tests share one moto server."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return Settings(
        region=REGION,
        endpoint_url=endpoint_url,
        accounts_table=f"{prefix}-accounts",
        models_table=f"{prefix}-models",
        deployments_table=f"{prefix}-deployments",
        associations_table=f"{prefix}-associations",
        jobs_table=f"{prefix}-jobs",
        usage_table=f"{prefix}-usage",
        bundle_bucket=f"{prefix}-bundles",
        data_bucket=f"{prefix}-data",
        deploy_queue=f"{prefix}-deploy",
    )


@pytest.fixture
def infra(moto_server: str, aws_session: boto3.session.Session) -> Iterator[Infra]:
    """Fresh tables, bucket and queues (created by ``create_infrastructure``), destroyed after the test."""
    settings = unique_settings(moto_server)
    outputs = create_infrastructure(settings, aws_session)
    yield Infra(settings, outputs, aws_session)
    destroy_infrastructure(settings, aws_session)


@pytest.fixture(scope="session")
def engine() -> Any:
    """A docker engine; tests that need one skip without it, except in CI (``$CI``), where they fail."""
    import docker

    try:
        client = docker.from_env(timeout=900)
        client.ping()
    except docker.errors.DockerException as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have a docker engine (.ci/run starts dockerd): {exc}")
        pytest.skip(f"no docker engine answers: {exc}")
    return client


@pytest.fixture(scope="session")
def docker_sandbox(engine: Any) -> Any:
    """The docker sandbox on the test engine (its probe image is built once, then cached by the engine)."""
    from chalicelib.docker.builder import DockerImageBuilder
    from chalicelib.docker.sandbox import DockerSandbox

    return DockerSandbox(DockerImageBuilder(engine))


# --------------------------------------------------------------------------- test tiers: the folder decides

TIERS = ("unit", "functional", "integration")
ENGINE_MARKERS = {"functional", "docker", "localstack", "browser"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shard",
        default="1/1",
        metavar="K/N",
        help="run every N-th test from the K-th (`make test-unit` runs N shards at once, one per core)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its folder's tier, so a file cannot disagree with where it lives.

    tests/contract runs one suite against a twin and a real engine: there the parameter decides (the
    real-engine half carries ``functional`` from its ``pytest.param``, the rest is ``unit``). A test in a
    unit folder that asks for an engine is a collection error: move it to tests/functional.
    """
    root = Path(__file__).parent
    misplaced = []
    for item in items:
        folder = item.path.relative_to(root).parts[0] if item.path.is_relative_to(root) else ""
        marked = {mark.name for mark in item.iter_markers()}
        if folder == "contract":
            tier = "functional" if marked & ENGINE_MARKERS else "unit"
        elif folder in TIERS:
            tier = folder
        else:
            misplaced.append(
                f"{item.nodeid}: not in tests/unit, tests/functional, tests/integration, tests/contract"
            )
            continue
        if tier == "unit" and marked & ENGINE_MARKERS:
            misplaced.append(f"{item.nodeid}: marked {sorted(marked & ENGINE_MARKERS)} in tests/unit")
        item.add_marker(tier)
    if misplaced:
        raise pytest.UsageError("tests in the wrong tier's folder:\n  " + "\n  ".join(misplaced))
    shard, shards = (int(n) for n in config.getoption("shard").split("/"))
    if shards > 1:  # interleaved, so each shard gets its share of every slow file
        config.hook.pytest_deselected(items=[t for i, t in enumerate(items) if i % shards != shard - 1])
        items[:] = items[shard - 1 :: shards]
