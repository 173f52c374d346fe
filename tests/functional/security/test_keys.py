"""Keys and secrets on a moto server: bootstrapping the admin key concurrently on both account stores, and
reading it from Secrets Manager and SSM (the rest is in tests/unit/security/test_keys.py)."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.aws.secrets import SecretsManagerSecret, SsmSecureString
from chalicelib.core.errors import ConfigError, Unauthorized
from chalicelib.memory.secrets import MemorySecret
from chalicelib.memory.stores import MemoryAccountStore
from chalicelib.services.accounts import BOOTSTRAP_ADMIN_ID, AccountService, generate_key
from tests.conftest import Infra
from tests.support import Api
from tests.unit.security.test_keys import DEPLOYED, NOW


@pytest.fixture(params=["memory", pytest.param("dynamodb", marks=pytest.mark.functional)])
def account_store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryAccountStore()
    infra: Infra = request.getfixturevalue("infra")
    return wiring.aws_container(infra.settings).accounts


def test_bootstrap_is_idempotent_concurrent_and_never_revokes_a_newer_key(account_store: Any) -> None:
    store = account_store
    times = iter(f"2026-12-01T00:00:{s:02d}.000Z" for s in range(60))
    service = AccountService(store, lambda: next(times))
    first, second = generate_key(), generate_key()
    errors: list[BaseException] = []

    def boot() -> None:
        try:
            AccountService(store, lambda: NOW).bootstrap_admin(first)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=boot) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert service.authenticate(first).account_id == BOOTSTRAP_ADMIN_ID
    service.bootstrap_admin(second)
    service.bootstrap_admin(first)  # a stale process with the old key: it stays revoked, the new one works
    with pytest.raises(Unauthorized):
        service.authenticate(first)
    assert service.authenticate(second).account_id == BOOTSTRAP_ADMIN_ID
    assert len(store.list_keys(BOOTSTRAP_ADMIN_ID)) == 2
    with pytest.raises(ConfigError, match="malformed"):
        service.bootstrap_admin("mp_short")


def _secret_name() -> str:
    return f"modelport/admin-key-{uuid.uuid4().hex[:8]}"


def test_the_admin_key_is_read_from_secrets_manager_and_ssm_securestring(infra: Infra) -> None:
    token = generate_key()
    secrets, ssm = infra.client("secretsmanager"), infra.client("ssm")
    name = _secret_name()
    secrets.create_secret(Name=name, SecretString=token + "\n")
    ssm.put_parameter(Name=f"/{name}", Value=token, Type="SecureString")
    ssm.put_parameter(Name=f"/{name}/plain", Value=token, Type="String")
    assert SecretsManagerSecret(secrets, name).read() == token
    assert SsmSecureString(ssm, f"/{name}").read() == token
    with pytest.raises(ConfigError, match="does not exist"):
        SecretsManagerSecret(secrets, name + "-nope").read()
    with pytest.raises(ConfigError, match="does not exist"):
        SsmSecureString(ssm, f"/{name}/nope").read()
    with pytest.raises(ConfigError, match="not a SecureString"):
        SsmSecureString(ssm, f"/{name}/plain").read()
    with pytest.raises(ConfigError, match="does not exist"):
        MemorySecret(None, name).read()


@pytest.mark.parametrize("source", ["secret", "parameter"])
def test_the_api_bootstraps_the_admin_key_from_its_secret(infra: Infra, source: str) -> None:
    token, name = generate_key(), _secret_name()
    if source == "secret":
        infra.client("secretsmanager").create_secret(Name=name, SecretString=token)
        settings = replace(infra.settings, stage="dev", admin_key_secret=name, **DEPLOYED)
    else:
        infra.client("ssm").put_parameter(Name=f"/{name}", Value=token, Type="SecureString")
        settings = replace(infra.settings, stage="dev", admin_key_parameter=f"/{name}", **DEPLOYED)
    wiring.override(wiring.aws_container(settings))
    try:
        with Client(app) as client:
            me = Api(client, token).call("GET", "/v1/accounts/me")
            assert (me.status_code, me.json_body["account_id"]) == (200, BOOTSTRAP_ADMIN_ID)
    finally:
        wiring.override(None)
