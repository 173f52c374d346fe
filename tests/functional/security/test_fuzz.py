"""The standing fuzz gate: schemathesis over the control API's OpenAPI and every example model's.

One local stack for the module (moto + the edge + the emulator + the API in its own process), one tenant
account, every example deployed by that account the way a user deploys it. Each OpenAPI document is
fetched from the API itself and fuzzed through it with the tenant's key: no request may end in a 5xx, and
every answer must have a documented status and match the documented schema. Generation is deterministic
(derandomized, no example database), so a failure here is a failure on every run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chalicelib.client import Client, Connection, deploy, invoke
from chalicelib.demo import samples_of
from chalicelib.local.stack import LocalStack
from chalicelib.services.intake import config_file_for_dir

pytestmark = [pytest.mark.functional, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MODELS = tuple(sorted(p.parent.name for p in EXAMPLES.glob("*/modelport.yaml")))
PREFIX = "fz-"
"""Deployed under names of their own: moto's state is process-wide, and an earlier test's stack in this
process may still hold the examples' own names (owned by another account)."""
MAX_EXAMPLES = 10
"""Per operation and generation phase; the coverage phase adds its own boundary cases on top."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: bounded time
)
CASES: Counter[str] = Counter()
"""Requests sent, per fuzzed document: the last test checks every target was really exercised."""
OPERATIONS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    running = LocalStack(edge_port=0, api_port=0, launcher="process", registry=False).start()
    yield running
    running.stop()


def _renamed(example: Path, dest: Path) -> Path:
    shutil.copytree(example, dest)
    config = dest / "modelport.yaml"
    text = config.read_text()
    renamed = re.sub(r"^name: *(\S+)", lambda m: f"name: {PREFIX}{m[1]}", text, count=1, flags=re.M)
    assert renamed != text, example
    config.write_text(renamed)
    return dest


@pytest.fixture(scope="module")
def tenant(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """A non-admin account owning every example model, deployed through the real upload path and warmed
    with one of its samples (a cold start under the fuzzer's load is not what this gate measures)."""
    admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
    created = admin.json("POST", "/v1/accounts", {"name": "fuzz"})
    client = Client(Connection(stack.api_url, created["api_key"], stack.endpoint_url))
    root = tmp_path_factory.mktemp("fuzz-examples")
    dirs = {name: _renamed(EXAMPLES / name, root / name) for name in MODELS}
    for name, model_dir in dirs.items():
        outcome = deploy(client, model_dir)
        assert outcome.status == "READY", (name, outcome.reason)
    for name, model_dir in dirs.items():  # one at a time: parallel cold starts on 2 busy cores outlast 10 s
        sample = samples_of(model_dir, config_file_for_dir(model_dir))[0]
        assert invoke(client, PREFIX + name, sample.body, content_type=sample.content_type).status == 200
    return client


@pytest.fixture(scope="module")
def session(tenant: Client) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {tenant.conn.api_key}"
        yield http


def _schema(tenant: Client, path: str) -> Any:
    document = tenant.json("GET", path)
    config = schemathesis.Config.from_dict(
        {"base-url": tenant.conn.api_url, "seed": 1, "generation": {"deterministic": True}}
    )
    return schemathesis.openapi.from_dict(document, config=config)


@pytest.fixture(scope="module")
def control_schema(tenant: Client) -> Any:
    return _schema(tenant, "/openapi.json")


@pytest.fixture(scope="module", params=MODELS)
def model_schema(request: pytest.FixtureRequest, tenant: Client) -> Any:
    return _schema(tenant, f"/v1/models/{PREFIX}{request.param}/openapi.json")


def _fuzz(case: Any, session: requests.Session) -> None:
    CASES[case.operation.schema.raw_schema["info"]["title"]] += 1
    OPERATIONS[case.operation.label] += 1
    response = case.call(session=session, timeout=60)
    case.validate_response(response, checks=CHECKS)


models = schemathesis.pytest.from_fixture("model_schema")
control = schemathesis.pytest.from_fixture("control_schema")


@models.parametrize()
@FUZZ_SETTINGS
def test_every_example_models_openapi(case: Any, session: requests.Session) -> None:
    _fuzz(case, session)


@control.parametrize()
@FUZZ_SETTINGS
def test_the_control_api(case: Any, session: requests.Session) -> None:
    """Last: its operations create versions and grants under random names (never the models above)."""
    _fuzz(case, session)


UNSUPPORTED = ("TRACE", "CONNECT", "HEAD", "OPTIONS", "PATCH", "PUT", "DELETE", "POST", "GET", "PROPFIND")


def test_a_method_no_route_defines_is_answered_as_api_gateway_does(
    tenant: Client, control_schema: Any, session: requests.Session
) -> None:
    """403 ``{"message": "Missing Authentication Token"}`` on every path, with or without a key."""
    documents = [control_schema.raw_schema]
    documents += [tenant.json("GET", f"/v1/models/{PREFIX}{name}/openapi.json") for name in MODELS]
    checked = 0
    for document in documents:
        for path, item in document["paths"].items():
            url = tenant.conn.api_url + path.replace("{", "x").replace("}", "")
            for method in UNSUPPORTED:
                if method.lower() in item:
                    continue
                for headers in ({}, {"Authorization": None}):
                    response = session.request(method, url, headers=headers, data=b"{}", timeout=10)
                    assert response.status_code == 403, (method, path, response.status_code, response.text)
                    if method != "HEAD":
                        assert response.json() == {"message": "Missing Authentication Token"}, (method, path)
                    checked += 1
    unknown = session.get(tenant.conn.api_url + "/v1/no/such/path", timeout=10)
    assert unknown.status_code == 403 and unknown.json() == {"message": "Missing Authentication Token"}
    assert checked > 200


def test_no_authorization_header_is_our_documented_401(tenant: Client) -> None:
    response = requests.post(tenant.conn.api_url + "/v1/models/iris-onnx/invoke", json={}, timeout=10)
    assert response.status_code == 401
    assert response.json() == {
        "code": "Unauthorized", "message": "missing API key", "hint": "send Authorization: Bearer mp_..."
    }  # fmt: skip


def test_every_operation_was_fuzzed(tenant: Client, control_schema: Any) -> None:
    """Last: the counts of the fuzz tests above (a filter or a loader change must not empty the gate)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("counts are per process")
    documents = {"Modelport control API": control_schema.raw_schema}
    for name in MODELS:
        documents[f"{PREFIX}{name} (Modelport)"] = tenant.json(
            "GET", f"/v1/models/{PREFIX}{name}/openapi.json"
        )
    labels = {f"{method.upper()} {path}" for doc in documents.values() for path, item in doc["paths"].items()
              for method in item if method != "parameters"}  # fmt: skip
    assert set(OPERATIONS) == labels, set(OPERATIONS) ^ labels
    assert set(CASES) == set(documents), CASES
    print("\nfuzz cases per target:", dict(CASES))
