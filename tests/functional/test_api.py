"""The control API through chalice.test.Client: auth, isolation between accounts, versions, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.services.accounts import generate_key
from chalicelib.settings import Settings
from tests.conftest import Infra
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy, new_account


@pytest.fixture(params=["memory", pytest.param("dynamodb", marks=pytest.mark.functional)])
def container(request: pytest.FixtureRequest) -> Iterator[wiring.Container]:
    """The same API suite over the in-memory twins and over DynamoDB/S3 on a moto server."""
    limits = {"admin_key": ADMIN_KEY, "max_bundle_bytes": 10 * 1024 * 1024}
    if request.param == "memory":
        c = wiring.memory_container(Settings(**limits))  # type: ignore[arg-type]
    else:
        infra: Infra = request.getfixturevalue("infra")
        c = wiring.aws_container(replace(infra.settings, **limits))  # type: ignore[arg-type]
    wiring.override(c)
    yield c
    wiring.override(None)


@pytest.fixture
def client(container: wiring.Container) -> Iterator[Client]:
    with Client(app) as c:
        yield c


@pytest.fixture
def admin(client: Client) -> Api:
    return Api(client, ADMIN_KEY)


# --------------------------------------------------------------------------- auth


def test_requests_without_a_valid_key_get_401(client: Client) -> None:
    assert Api(client, None).call("GET", "/v1/models").status_code == 401
    for bad in ("nonsense", "mp_aaaaaaaaaaaa_" + "x" * 43, generate_key()):
        r = Api(client, bad).call("GET", "/v1/models")
        assert r.status_code == 401
        assert r.json_body["code"] == "Unauthorized"


def test_a_revoked_key_stops_working(admin: Api) -> None:
    alice, alice_id = new_account(admin, "alice")
    assert alice.call("GET", "/v1/accounts/me").json_body["account_id"] == alice_id
    issued = alice.call("POST", f"/v1/accounts/{alice_id}/keys", {"description": "ci"})
    assert issued.status_code == 201
    second = Api(admin.client, issued.json_body["api_key"])
    key_id = issued.json_body["key"]["key_id"]
    assert "secret_hash" not in issued.json_body["key"]
    assert second.call("DELETE", f"/v1/keys/{key_id}").status_code == 200
    assert second.call("GET", "/v1/accounts/me").status_code == 401
    assert alice.call("GET", "/v1/accounts/me").status_code == 200


def test_keys_are_stored_only_as_hashes(container: wiring.Container, admin: Api) -> None:
    _, alice_id = new_account(admin, "alice")
    r = admin.call("POST", f"/v1/accounts/{alice_id}/keys", {})
    token = r.json_body["api_key"]
    stored = container.accounts.get_key(r.json_body["key"]["key_id"])
    assert token not in stored.model_dump_json()
    assert token[len("mp_") + 13 :] not in stored.model_dump_json()  # the secret part


def test_only_admins_create_accounts(admin: Api) -> None:
    alice, _ = new_account(admin, "alice")
    assert alice.call("POST", "/v1/accounts", {"name": "mallory"}).status_code == 403
    assert alice.call("GET", "/v1/accounts").status_code == 403


# --------------------------------------------------------------------------- isolation matrix

ENDPOINTS = [
    ("GET", "/v1/models/{m}", None),
    ("GET", "/v1/models/{m}/versions", None),
    ("GET", "/v1/models/{m}/versions/1", None),
    ("GET", "/v1/models/{m}/versions/1/config", None),
    ("DELETE", "/v1/models/{m}/versions/1", None),
    ("PUT", "/v1/models/{m}/default", {"version": 1}),
    ("GET", "/v1/models/{m}/grants", None),
    ("PUT", "/v1/models/{m}/grants/{b}", None),
    ("DELETE", "/v1/models/{m}/grants/{b}", None),
    ("GET", "/v1/models/{m}/deployments", None),
    ("GET", "/v1/deployments/{d}", None),
    ("GET", "/v1/accounts/{a}", None),
    ("GET", "/v1/accounts/{a}/keys", None),
    ("POST", "/v1/accounts/{a}/keys", {}),
]


@pytest.fixture
def two_accounts(container: wiring.Container, admin: Api) -> dict[str, Any]:
    alice, alice_id = new_account(admin, "alice")
    bob, bob_id = new_account(admin, "bob")
    done = deploy(container, alice, "iris", bundle(config=_iris_yaml("iris")))
    assert done["deployment"].state == "READY", done["deployment"].reason
    return {"alice": alice, "bob": bob, "a": alice_id, "b": bob_id, "d": done["deployment"].deployment_id}


def _iris_yaml(name: str) -> str:
    text = (ROOT / "examples/iris-onnx/modelport.yaml").read_text()
    return text.replace("name: iris-onnx", f"name: {name}")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_another_accounts_model_is_not_found_not_forbidden(
    two_accounts: dict[str, Any], method: str, path: str, body: Any
) -> None:
    url = path.format(m="iris", b=two_accounts["b"], a=two_accounts["a"], d=two_accounts["d"])
    r = two_accounts["bob"].call(method, url, body)
    assert r.status_code == 404, (url, r.status_code, r.body)
    assert "iris" not in json.dumps(r.json_body).replace(url, "") or r.json_body["code"] == "NotFound"


def test_isolation_holds_in_listings(two_accounts: dict[str, Any]) -> None:
    assert two_accounts["bob"].call("GET", "/v1/models").json_body == []
    names = [m["name"] for m in two_accounts["alice"].call("GET", "/v1/models").json_body]
    assert names == ["iris"]


def test_a_grant_lets_another_account_read_but_not_change(two_accounts: dict[str, Any]) -> None:
    alice, bob, bob_id = two_accounts["alice"], two_accounts["bob"], two_accounts["b"]
    assert alice.call("PUT", f"/v1/models/iris/grants/{bob_id}").status_code == 200
    assert [m["name"] for m in bob.call("GET", "/v1/models").json_body] == ["iris"]
    assert bob.call("GET", "/v1/models/iris").status_code == 200
    assert bob.call("GET", "/v1/models/iris/versions/1/config").status_code == 200
    assert bob.call("PUT", "/v1/models/iris/default", {"version": 1}).status_code == 403
    assert bob.call("DELETE", "/v1/models/iris/versions/1").status_code == 403
    assert alice.call("DELETE", f"/v1/models/iris/grants/{bob_id}").status_code == 204
    assert bob.call("GET", "/v1/models/iris").status_code == 404


# --------------------------------------------------------------------------- versions


def test_upload_deploys_a_version_and_serves_its_config_file(container: wiring.Container, admin: Api) -> None:
    alice, _ = new_account(admin, "alice")
    done = deploy(container, alice, "iris", bundle(config=_iris_yaml("iris")))
    deployment = done["deployment"]
    assert deployment.state == "READY"
    assert [s.stage for s in deployment.stages] == [
        "RECEIVED", "INSPECTED", "CONFIG_GENERATED", "IMAGE_BUILT", "FUNCTIONS_READY", "READY",
    ]  # fmt: skip
    status = alice.call("GET", f"/v1/deployments/{deployment.deployment_id}").json_body
    assert status["state"] == "READY" and all(s["started_at"] <= s["finished_at"] for s in status["stages"])
    assert alice.call("GET", "/v1/models/iris").json_body["default_version"] == 1
    as_json = alice.call("GET", "/v1/models/iris/versions/1/config")
    assert as_json.headers["Content-Type"] == "application/json"
    assert json.loads(as_json.body)["protocol"]["request"]["content_types"] == [
        "application/json",
        "text/csv",
    ]
    as_yaml = alice.call("GET", "/v1/models/iris/versions/1/config", headers={"Accept": "application/yaml"})
    assert as_yaml.headers["Content-Type"] == "application/yaml"
    assert as_yaml.body.decode().startswith("schema_version: modelport.dev/v1")


def test_default_version_switch_rollback_and_delete(container: wiring.Container, admin: Api) -> None:
    alice, _ = new_account(admin, "alice")
    for _ in range(2):
        assert (
            deploy(container, alice, "iris", bundle(config=_iris_yaml("iris")))["deployment"].state == "READY"
        )
    assert alice.call("GET", "/v1/models/iris").json_body["default_version"] == 1
    assert alice.call("PUT", "/v1/models/iris/default", {"version": 2}).json_body["default_version"] == 2
    assert alice.call("DELETE", "/v1/models/iris/versions/2").status_code == 409  # the default
    assert alice.call("PUT", "/v1/models/iris/default", {"version": 1}).status_code == 200  # rollback
    assert alice.call("DELETE", "/v1/models/iris/versions/2").status_code == 204
    assert [v["version"] for v in alice.call("GET", "/v1/models/iris/versions").json_body] == [1]
    promoted = container.functions.promoted  # type: ignore[attr-defined]
    assert [d.functions[0].version for d in promoted] == ["1", "2", "1"]  # the `live` alias follows
    retired = container.functions.retired  # type: ignore[attr-defined]
    assert [d.functions[0].version for d in retired] == ["2"]  # what ran version 2 is deleted with it


def test_a_rejected_config_fails_the_deployment_with_the_cores_message(
    container: wiring.Container, admin: Api
) -> None:
    alice, _ = new_account(admin, "alice")
    bad = _iris_yaml("iris").replace("environment:", "enviroment:")
    deployment = deploy(container, alice, "iris", bundle(config=bad))["deployment"]
    assert deployment.state == "FAILED"
    assert "unknown key 'enviroment': did you mean 'environment'?" in (deployment.reason or "")
    version = alice.call("GET", "/v1/models/iris/versions/1").json_body
    assert version["status"] == "FAILED" and "enviroment" in version["reason"]
    assert alice.call("GET", "/v1/models/iris/versions/1/config").status_code == 409
    assert alice.call("PUT", "/v1/models/iris/default", {"version": 1}).status_code == 409


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("POST", "/v1/models", "{not json", 400, "malformed JSON"),
        ("POST", "/v1/models", {"nam": "x"}, 400, "/name"),
        ("POST", "/v1/models", {"name": "Bad Name"}, 400, "not a model name"),
        ("POST", "/v1/models/iris/versions", {"size_bytes": "big"}, 400, "/size_bytes"),
        ("POST", "/v1/models/iris/versions", {"size_bytes": 11 * 1024 * 1024}, 413, "over the 10.0 MB limit"),
        ("POST", "/v1/models/iris/versions", {"size_bytes": 10, "format": "rar"}, 400, "/format"),
        ("GET", "/v1/models/nope", None, 404, "no such model"),
        ("GET", "/v1/models/nope/versions/x", None, 400, "version must be a positive integer"),
        ("PUT", "/v1/models/nope/default", {"version": 0}, 400, "/version"),
    ],
)
def test_bad_requests_get_clear_client_errors(
    admin: Api, method: str, path: str, body: Any, status: int, needle: str
) -> None:
    alice, _ = new_account(admin, "alice")
    r = alice.call(method, path, body)
    assert r.status_code == status, r.body
    assert needle in r.body.decode()


def test_version_conflict_when_the_name_is_taken(admin: Api) -> None:
    alice, _ = new_account(admin, "alice")
    bob, _ = new_account(admin, "bob")
    assert alice.call("POST", "/v1/models", {"name": "shared"}).status_code == 201
    assert alice.call("POST", "/v1/models", {"name": "shared"}).status_code == 409
    assert bob.call("POST", "/v1/models/shared/versions", {"size_bytes": 10}).status_code == 409


def test_openapi_document_lists_every_route(client: Client) -> None:
    doc = client.http.get("/openapi.json").json_body
    assert doc["openapi"] == "3.1.0"
    routes = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    chalice_routes = {(m, p) for p, entries in app.routes.items() for m in entries}
    assert routes == chalice_routes
    post = doc["paths"]["/v1/models/{name}/versions"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/NewVersion")
    assert "413" in post["responses"]
