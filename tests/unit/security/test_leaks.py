"""Uniform answers: nothing tells an account whether another account's ids exist, and a grantee sees what
invoking needs, nothing of the owner's infrastructure (through the API, memory twins)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.settings import Settings
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy, new_account

UNKNOWN_ACCOUNT = "acct_0123456789abcdef"
UNKNOWN_KEY = "zzzzzzzzzzzz"
UNKNOWN_DEPLOYMENT = "0" * 32


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    """alice owns iris (deployed, version 1 READY); carol holds a grant on it; bob is a stranger."""
    container = wiring.memory_container(Settings(admin_key=ADMIN_KEY))
    wiring.override(container)
    with Client(app) as client:
        admin = Api(client, ADMIN_KEY)
        alice, alice_id = new_account(admin, "alice")
        bob, bob_id = new_account(admin, "bob")
        carol, carol_id = new_account(admin, "carol")
        config = (
            (ROOT / "examples/iris-onnx/modelport.yaml").read_text().replace("name: iris-onnx", "name: iris")
        )
        done = deploy(container, alice, "iris", bundle(config=config))
        assert done["deployment"].state == "READY", done["deployment"].reason
        assert alice.call("PUT", f"/v1/models/iris/grants/{carol_id}").status_code == 200
        assert bob.call("POST", "/v1/models", {"name": "bobs"}).status_code == 201
        (alice_key,) = alice.call("GET", f"/v1/accounts/{alice_id}/keys").json_body
        yield {
            "container": container,
            "alice": alice,
            "bob": bob,
            "carol": carol,
            "a": alice_id,
            "b": bob_id,
            "c": carol_id,
            "k": alice_key["key_id"],
            "d": done["deployment"].deployment_id,
        }
    wiring.override(None)


def _body(api: Api, method: str, path: str, body: Any = None) -> bytes:
    r = api.call(method, path, body)
    assert r.status_code == 404, (method, path, r.status_code, r.body)
    return bytes(r.body)


# (kind, method, path with {id}, foreign id, unknown id, body); bob asks
CASES = [
    ("account", "GET", "/v1/accounts/{id}", "a", UNKNOWN_ACCOUNT, None),
    ("account", "GET", "/v1/accounts/{id}/keys", "a", UNKNOWN_ACCOUNT, None),
    ("account", "POST", "/v1/accounts/{id}/keys", "a", UNKNOWN_ACCOUNT, {}),
    ("key", "DELETE", "/v1/keys/{id}", "k", UNKNOWN_KEY, None),
    ("model", "GET", "/v1/models/{id}", "iris", "nope", None),
    ("model", "GET", "/v1/models/{id}/versions", "iris", "nope", None),
    ("model", "POST", "/v1/models/{id}/invoke", "iris", "nope", {"records": []}),
    ("model", "GET", "/v1/models/{id}/openapi.json", "iris", "nope", None),
    ("model", "GET", "/v1/models/{id}/grants", "iris", "nope", None),
    ("model", "PUT", "/v1/models/{id}/grants/" + UNKNOWN_ACCOUNT, "iris", "nope", None),
    ("model", "DELETE", "/v1/models/{id}/grants/" + UNKNOWN_ACCOUNT, "iris", "nope", None),
    ("model", "PUT", "/v1/models/{id}/default", "iris", "nope", {"version": 1}),
    ("model", "GET", "/v1/models/{id}/deployments", "iris", "nope", None),
    ("model", "GET", "/v2/models/{id}", "iris", "nope", None),
    ("version", "GET", "/v1/models/{id}", "iris/versions/1", "nope/versions/1", None),
    ("version", "GET", "/v1/models/{id}", "iris/versions/1", "iris/versions/99", None),
    ("version", "GET", "/v1/models/{id}/config", "iris/versions/1", "nope/versions/1", None),
    ("version", "DELETE", "/v1/models/{id}", "iris/versions/1", "nope/versions/1", None),
    ("deployment", "GET", "/v1/deployments/{id}", "d", UNKNOWN_DEPLOYMENT, None),
    ("deployment", "GET", "/v1/deployments/{id}", "d", "x" * 3000, None),
    ("key", "DELETE", "/v1/keys/{id}", "k", "K" * 3000, None),
    ("account", "GET", "/v1/accounts/{id}", "a", "x" * 3000, None),
    ("model", "GET", "/v1/models/{id}", "iris", "X" * 3000, None),
]


@pytest.mark.parametrize(("kind", "method", "path", "foreign", "unknown", "body"), CASES)
def test_unknown_and_foreign_ids_get_byte_identical_404s(
    world: dict[str, Any], kind: str, method: str, path: str, foreign: str, unknown: str, body: Any
) -> None:
    bob = world["bob"]
    foreign_id = world.get(foreign, foreign)
    theirs = _body(bob, method, path.format(id=foreign_id), body)
    missing = _body(bob, method, path.format(id=unknown), body)
    assert theirs == missing, (kind, theirs, missing)
    assert foreign_id.encode() not in theirs and unknown.encode() not in missing
    assert json.loads(theirs)["code"] == "NotFound"


def test_each_kind_has_one_404_body_whichever_route_and_whoever_asks(world: dict[str, Any]) -> None:
    """The owner's own misses answer as a stranger's do: one body per kind, no id in it."""
    alice, bob, carol = world["alice"], world["bob"], world["carol"]
    account = {
        _body(bob, "GET", f"/v1/accounts/{world['a']}"),
        _body(alice, "PUT", f"/v1/models/iris/grants/{UNKNOWN_ACCOUNT}"),
        _body(Api(alice.client, ADMIN_KEY), "GET", f"/v1/accounts/{UNKNOWN_ACCOUNT}"),
        _body(Api(alice.client, ADMIN_KEY), "POST", f"/v1/accounts/{UNKNOWN_ACCOUNT}/keys", {}),
    }
    key = {_body(bob, "DELETE", f"/v1/keys/{world['k']}"), _body(alice, "DELETE", f"/v1/keys/{UNKNOWN_KEY}")}
    version = {
        _body(alice, "GET", "/v1/models/iris/versions/99"),
        _body(alice, "GET", "/v1/models/iris/versions/99/config"),
        _body(alice, "DELETE", "/v1/models/iris/versions/99"),
        _body(alice, "PUT", "/v1/models/iris/default", {"version": 99}),
        _body(carol, "GET", "/v1/models/iris/versions/99"),
    }
    deployment = {
        _body(bob, "GET", f"/v1/deployments/{world['d']}"),
        _body(carol, "GET", f"/v1/deployments/{world['d']}"),
        _body(alice, "GET", f"/v1/deployments/{UNKNOWN_DEPLOYMENT}"),
    }
    grant = {
        _body(alice, "DELETE", f"/v1/models/iris/grants/{world['b']}"),
        _body(alice, "DELETE", f"/v1/models/iris/grants/{UNKNOWN_ACCOUNT}"),
    }
    for kind, bodies in [("account", account), ("key", key), ("version", version), ("deployment", deployment),
                         ("grant", grant)]:  # fmt: skip
        assert len(bodies) == 1, (kind, bodies)
    model = _body(bob, "GET", "/v1/models/nope")
    assert model == _body(carol, "GET", "/v1/models/iris/deployments")  # deployments: owners only
    assert json.loads(model)["message"] == "no such model"


def _infrastructure(world: dict[str, Any]) -> list[str]:
    """What the owner's records hold that a grantee must never see."""
    container: wiring.Container = world["container"]
    (record,) = container.models.list_versions("iris")
    assert record.manifest is not None
    manifest = json.loads(record.manifest)
    function = manifest["deployment"]["functions"][0]
    image = manifest["container"]
    return [
        "arn:",
        function["function_name"],
        image["image_uri"],
        image["image_digest"],
        image["environment_image"],
        manifest["environment"]["fingerprint"],
        manifest["artifact"]["digest"],
        world["d"],
        record.upload_key,
        "s3://",
        world["a"],  # the owner's account id
    ]


def test_a_grantee_sees_what_invoking_needs_and_nothing_of_the_owners_infrastructure(
    world: dict[str, Any],
) -> None:
    carol = world["carol"]
    secrets = _infrastructure(world)
    bodies: dict[str, str] = {}
    for path in [
        "/v1/models",
        "/v1/models/iris",
        "/v1/models/iris/versions",
        "/v1/models/iris/versions/1",
        "/v1/models/iris/versions/1/config",
        "/v1/models/iris/openapi.json",
        "/v2/models/iris",
    ]:
        r = carol.call("GET", path)
        assert r.status_code == 200, (path, r.body)
        bodies[path] = r.body.decode()
    as_yaml = carol.call("GET", "/v1/models/iris/versions/1/config", headers={"Accept": "application/yaml"})
    bodies["config.yaml"] = as_yaml.body.decode()
    for path, text in bodies.items():
        for secret in secrets:
            assert secret not in text, (path, secret)
    model = json.loads(bodies["/v1/models/iris"])
    assert (model["name"], model["default_version"]) == ("iris", 1)
    config = json.loads(bodies["/v1/models/iris/versions/1/config"])
    assert config["protocol"]["request"]["content_types"] == ["application/json", "text/csv"]
    assert {"native", "labels", "protocol"} <= set(config) and "deployment" not in config
    assert as_yaml.headers["Content-Type"] == "application/yaml"
    for path in ("/v1/models/iris/deployments", f"/v1/deployments/{world['d']}"):
        assert carol.call("GET", path).status_code == 404


def test_the_owner_keeps_the_full_view(world: dict[str, Any]) -> None:
    alice = world["alice"]
    config = json.loads(alice.call("GET", "/v1/models/iris/versions/1/config").body)
    assert config["deployment"]["functions"][0]["function_arn"].startswith("arn:aws:lambda:")
    assert config["container"]["image_digest"].startswith("sha256:")
    assert alice.call("GET", "/v1/models/iris").json_body["owner"] == world["a"]
    assert alice.call("GET", "/v1/models/iris/versions/1").json_body["deployment_id"] == world["d"]
    assert alice.call("GET", f"/v1/deployments/{world['d']}").json_body["source"].startswith("s3://")
    assert [d["deployment_id"] for d in alice.call("GET", "/v1/models/iris/deployments").json_body] == [
        world["d"]
    ]


def test_a_grantee_invoking_a_failed_version_learns_its_status_not_the_owners_reason(
    world: dict[str, Any],
) -> None:
    broken = "name: iris\nframework: onnx\nartifacts: [missing.onnx]\n"
    failed = deploy(world["container"], world["alice"], "iris", bundle(config=broken))
    assert failed["deployment"].state == "FAILED" and "missing.onnx" in (failed["deployment"].reason or "")
    path = f"/v1/models/iris/versions/{failed['version']}/invoke"
    body = {"rows": [[5.1, 3.5, 1.4, 0.2]]}
    grantee = world["carol"].call("POST", path, body)
    assert grantee.status_code == 409
    assert json.loads(grantee.body)["message"] == f"version {failed['version']} of 'iris' is FAILED"
    owner = world["alice"].call("POST", path, body)
    assert owner.status_code == 409 and "missing.onnx" in json.loads(owner.body)["message"]


@pytest.mark.parametrize("name", ["steps-0123456789abcdef", "probe-0a1b2c3d4e5f", "deploy-worker"])
def test_no_model_takes_the_name_of_a_platform_function(world: dict[str, Any], name: str) -> None:
    """``modelport-<name>`` would be a shared stage, a probe or the deploy worker's function."""
    r = world["bob"].call("POST", "/v1/models", {"name": name})
    assert r.status_code == 400, r.body
    assert r.json_body["errors"] == [{"pointer": "/name", "message": "reserved"}]
    assert "is reserved" in r.json_body["message"]
    assert world["bob"].call("GET", f"/v1/models/{name}").status_code == 404
