"""Keys and secrets: how long a revoked key lives, rotating the admin key, where the admin key is kept, and
which functions can reach it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring, worker
from chalicelib.core.errors import ConfigError, Unauthorized
from chalicelib.memory.secrets import MemorySecret
from chalicelib.memory.stores import MemoryAccountStore
from chalicelib.services.accounts import BOOTSTRAP_ADMIN_ID, AccountService, generate_key
from chalicelib.settings import REVOCATION_WINDOW_S, Settings
from tests.support import ROOT, Api, bundle, new_account

NOW = "2026-12-01T00:00:00.000Z"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Deferred:
    """Background refreshes that run only when told: the slowest a refresh can be."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def __call__(self, work: Callable[[], None]) -> None:
        self.pending.append(work)


# --------------------------------------------------------------------------- the revocation window


@pytest.mark.parametrize("cache_s", [REVOCATION_WINDOW_S / 2, 60.0])
def test_a_key_revoked_elsewhere_is_refused_within_the_stated_window(cache_s: float) -> None:
    """Another instance revokes; this one has just verified the key. Whatever MODELPORT_CACHE_TTL_S says,
    the key is refused REVOCATION_WINDOW_S later (a refresh that never ran does not extend it)."""
    store, clock, later = MemoryAccountStore(), Monotonic(), Deferred()
    here = AccountService(store, lambda: NOW, cache_s=cache_s, monotonic=clock, spawn=later)
    elsewhere = AccountService(store, lambda: NOW)
    admin = elsewhere.bootstrap_admin(generate_key())
    alice, token = elsewhere.create_account(admin, "alice")
    assert here.authenticate(token) == alice
    (key,) = elsewhere.list_keys(admin, alice.account_id)
    elsewhere.revoke_key(admin, key.key_id)
    clock.now += REVOCATION_WINDOW_S - 0.01
    here.authenticate(token)  # may still pass: the window is what README promises, not zero
    clock.now += 0.01
    with pytest.raises(Unauthorized, match="invalid API key"):
        here.authenticate(token)


def test_the_authorizer_asks_api_gateway_to_cache_for_the_stated_window_and_readme_states_it() -> None:
    """What ``chalice package``/``deploy`` writes: the authorizer's TTL in the generated swagger."""
    from chalice.deploy.swagger import TemplatedSwaggerGenerator

    doc = TemplatedSwaggerGenerator().generate_swagger(app)
    authorizer = doc["securityDefinitions"]["authorizer"]["x-amazon-apigateway-authorizer"]
    assert authorizer["authorizerResultTtlInSeconds"] == REVOCATION_WINDOW_S
    assert Settings().cache_ttl_s * 2 <= REVOCATION_WINDOW_S
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert re.search(rf"within {REVOCATION_WINDOW_S} s\b", readme)


class CountingStore(MemoryAccountStore):
    def __init__(self) -> None:
        super().__init__()
        self.key_reads = 0

    def get_key(self, key_id: str) -> Any:
        self.key_reads += 1
        return super().get_key(key_id)


DEPLOYED: dict[str, Any] = {"image_builder": "process", "functions": "lambda"}
"""What a deployed stage must name instead of the twins (the calls here build nothing)."""


@pytest.mark.parametrize(("stage", "reads"), [("local", 1), ("dev", 3)])
def test_behind_api_gateway_the_authorizer_keeps_no_second_cache(stage: str, reads: int) -> None:
    """API Gateway's cache is the window on AWS; a process cache behind it would add its own age."""
    from chalicelib.api.deps import services

    store = CountingStore()
    wiring.override(replace(wiring.memory_container(Settings(stage=stage, **DEPLOYED)), accounts=store))
    try:
        accounts = services().accounts
        admin = accounts.bootstrap_admin(generate_key())
        _, token = accounts.create_account(admin, "alice")
        store.key_reads = 0
        for _ in range(3):
            accounts.authenticate(token)
        assert store.key_reads == reads
    finally:
        wiring.override(None)


# --------------------------------------------------------------------------- rotation


@pytest.fixture
def shared() -> Iterator[wiring.Container]:
    container = wiring.memory_container(Settings(admin_key=generate_key()))
    wiring.override(container)
    yield container
    wiring.override(None)


def _cold_start(previous: wiring.Container, admin_key: str) -> wiring.Container:
    """A new process of the same stack with another MODELPORT_ADMIN_KEY: same stores, new settings."""
    settings = replace(previous.settings, admin_key=admin_key)
    c = replace(previous, settings=settings, admin_key=MemorySecret(admin_key, "MODELPORT_ADMIN_KEY"))
    wiring.override(c)
    return c


def test_rotating_the_admin_key_revokes_the_previous_one(shared: wiring.Container) -> None:
    assert shared.settings.admin_key is not None
    old, new = shared.settings.admin_key, generate_key()
    with Client(app) as client:
        assert Api(client, old).call("GET", "/v1/accounts/me").json_body["account_id"] == BOOTSTRAP_ADMIN_ID
        alice, _ = new_account(Api(client, old), "alice")
        _cold_start(shared, new)
        assert Api(client, new).call("GET", "/v1/accounts/me").status_code == 200
        refused = Api(client, old).call("GET", "/v1/accounts/me")
        assert (refused.status_code, refused.json_body["message"]) == (401, "invalid API key")
        assert alice.call("GET", "/v1/accounts/me").status_code == 200  # other keys are untouched
        keys = Api(client, new).call("GET", f"/v1/accounts/{BOOTSTRAP_ADMIN_ID}/keys").json_body
        assert [k["revoked_at"] is not None for k in keys if k["key_id"] == old[3:15]] == [True]


def test_a_rotated_secret_takes_effect_without_a_cold_start(shared: wiring.Container) -> None:
    old, new = shared.settings.admin_key or "", generate_key()
    secret = MemorySecret(old, "modelport/admin-key")
    # A rotation happens after the key it replaces was made: a clock that ticks a second a call, not one
    # millisecond for both (bootstrap keys are ordered by when they were made).
    start, ticks = datetime.now(UTC), iter(range(1, 10**6))

    def clock() -> str:
        now = start + timedelta(seconds=next(ticks))
        return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    settings = replace(shared.settings, secret_ttl_s=0.0)
    wiring.override(replace(shared, settings=settings, admin_key=secret, clock=clock))
    with Client(app) as client:
        assert Api(client, old).call("GET", "/v1/accounts/me").status_code == 200
        secret.value = new
        assert Api(client, new).call("GET", "/v1/accounts/me").status_code == 200
        assert Api(client, old).call("GET", "/v1/accounts/me").status_code == 401


def test_an_admin_key_that_cannot_be_read_does_not_stop_other_keys() -> None:
    store, clock = MemoryAccountStore(), Monotonic()
    boot = AccountService(store, lambda: NOW)
    alice, token = boot.create_account(boot.bootstrap_admin(generate_key()), "alice")
    missing = MemorySecret(None, "modelport/admin-key")
    service = AccountService(store, lambda: NOW, admin_key=missing, monotonic=clock)
    assert service.authenticate(token) == alice
    assert service.authenticate(token) == alice
    assert missing.reads == 1  # retried later, not on every request
    clock.now += 11
    service.authenticate(token)
    assert missing.reads == 2


# --------------------------------------------------------------------------- where the admin key is kept


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_a_deployed_stage_with_a_plain_admin_key_refuses_to_start(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPORT_STAGE", stage)
    monkeypatch.setenv("MODELPORT_ADMIN_KEY", generate_key())
    wiring.override(None)
    with pytest.raises(ConfigError) as refused:
        wiring.container()  # what every handler calls first
    message = str(refused.value)
    assert "MODELPORT_ADMIN_KEY is set on stage" in message and "MODELPORT_ADMIN_KEY_SECRET" in message
    assert "\n" not in message
    monkeypatch.setenv("MODELPORT_STAGE", "local")  # the local stack keeps its plain variable
    assert Settings.from_env().admin_key
    with pytest.raises(ConfigError, match="name one source"):
        Settings(admin_key=generate_key(), admin_key_secret="modelport/admin-key")


class Untouchable:
    """A secret source that fails the test when read."""

    def read(self) -> str:
        raise AssertionError("the deploy path read the admin key")


def test_the_deploy_handler_runs_without_the_admin_key(shared: wiring.Container) -> None:
    with Client(app) as client:
        alice, _ = new_account(Api(client, shared.settings.admin_key), "alice")
        config = (
            (ROOT / "examples/iris-onnx/modelport.yaml").read_text().replace("name: iris-onnx", "name: iris")
        )
        data = bundle(config=config)
        upload = alice.call("POST", "/v1/models/iris/versions", {"size_bytes": len(data)}).json_body["upload"]
        info = shared.artifacts.put(upload["key"], data)
        # The deploy function: no admin key in its settings, and a source that must never be read.
        wiring.override(
            replace(shared, settings=replace(shared.settings, admin_key=None), admin_key=Untouchable())
        )
        body = json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Post", "s3": {
            "bucket": {"name": shared.settings.bundle_bucket},
            "object": {"key": info.key, "size": info.size_bytes, "eTag": info.etag}}}]})  # fmt: skip
        event = client.events.generate_sqs_event(message_bodies=[body], queue_name="modelport-deploy")
        assert worker.handler(event, None) == {"batchItemFailures": []}
    assert shared.models.get_version("iris", 1).status == "READY"


# --------------------------------------------------------------------------- what chalice deploys


def _functions(stage: str) -> dict[str, Any]:
    from chalice.cli.factory import CLIFactory
    from chalice.deploy.appgraph import ApplicationGraphBuilder

    # the config `chalice package` and `chalice deploy` build
    config = CLIFactory(project_dir=str(ROOT)).create_config_obj(chalice_stage_name=stage)
    graph = ApplicationGraphBuilder().build(config, stage)
    found: dict[str, Any] = {}

    def walk(resource: Any) -> None:
        if type(resource).__name__ == "LambdaFunction":
            found[resource.resource_name] = resource
        for child in resource.dependencies():
            walk(child)

    walk(graph)
    return found


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_only_the_authorizer_can_reach_the_admin_key(stage: str) -> None:
    functions = _functions(stage)
    assert {"api_handler", "authorizer", "on_bundle_abandoned"} <= set(functions)
    assert "on_bundle_uploaded" not in functions  # the deploy worker is an image function outside Chalice
    for name, function in functions.items():
        env = function.environment_variables
        assert "MODELPORT_ADMIN_KEY" not in env, name
        policy = json.loads((ROOT / ".chalice" / function.role.policy.filename.split("/")[-1]).read_text())
        actions = {a for s in policy["Statement"] for a in s["Action"]}
        reads_secret = "secretsmanager:GetSecretValue" in actions
        if name == "authorizer":
            assert env["MODELPORT_ADMIN_KEY_SECRET"] == "modelport/admin-key" and reads_secret
            (statement,) = [s for s in policy["Statement"] if "secretsmanager:GetSecretValue" in s["Action"]]
            assert statement["Action"] == ["secretsmanager:GetSecretValue"]
            assert statement["Resource"] == ["arn:aws:secretsmanager:*:*:secret:modelport/admin-key-??????"]
            assert not any(
                a.startswith(("lambda:", "s3:", "ecr:", "states:", "iam:", "sqs:")) for a in actions
            )
        else:
            assert "MODELPORT_ADMIN_KEY_SECRET" not in env and not reads_secret, name
            assert not any(a.startswith(("secretsmanager:", "ssm:", "kms:")) for a in actions), name


WORKER_ONLY = {
    ("s3:PutObject", "arn:aws:s3:::modelport-bundles/probes/*"),  # a large artifact staged for the probe
    ("iam:PassRole", "arn:aws:iam::*:role/modelport-probe"),  # creating the probe function
}
"""What only the deploy handlers do: the API never opens an artifact."""


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_deploy_handlers_cannot_touch_accounts_or_keys(stage: str) -> None:
    """They open tenant bundles: their role reads no secret and cannot write an account or a key; the rest of
    what they may do is the API's policy (which the adapter-call tests check), statement for statement, plus
    the probe's staging and role."""
    functions = _functions(stage)
    api = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    for name in ("on_bundle_abandoned",):  # the deploy queue's consumer is the worker (below)
        filename = functions[name].role.policy.filename.split("/")[-1]
        assert filename == f"policy-deploy-{stage}.json"
        deploy = json.loads((ROOT / ".chalice" / filename).read_text())
        resources = {r for st in deploy["Statement"] for r in st["Resource"]}
        assert not any("modelport-accounts" in r or "secret" in r for r in resources), resources
        allowed = {(a, r) for st in api["Statement"] for a in st["Action"] for r in st["Resource"]}
        granted = {(a, r) for st in deploy["Statement"] for a in st["Action"] for r in st["Resource"]}
        assert granted - allowed == WORKER_ONLY, granted - allowed
        lambda_and_states = {
            (a, r) for a, r in allowed if a.startswith(("lambda:", "states:", "iam:", "ecr:"))
        }
        assert lambda_and_states <= granted


def test_the_deploy_worker_cannot_touch_accounts_or_keys() -> None:
    """The worker (the template's WorkerRole) opens tenant bundles: no accounts table, no secret, no key."""
    from chalicelib.aws.template import stack_template

    template = stack_template(Settings(stage="dev", image_builder="oci", registry="ecr", functions="lambda"))
    role = template["Resources"]["WorkerRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    text = json.dumps(statements)
    assert "AccountsTable" not in text and "AdminKeySecret" not in text and "secret" not in text.lower()
    actions = {a for s in statements for a in s["Action"]}
    assert not any(a.startswith(("secretsmanager:", "ssm:", "kms:")) for a in actions)
    assert "ProbeRole" in json.dumps([s for s in statements if s["Action"] == ["iam:PassRole"]])
