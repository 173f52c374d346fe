"""The ECR adapter against a moto server: repositories and login tokens (moto has no registry API)."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from chalicelib.aws.ecr import (
    KEEP_IMAGES,
    EcrRegistry,
    RegistryError,
    decode_token,
    is_ecr_registry,
    lifecycle_policy,
)
from chalicelib.core.errors import ConfigError

pytestmark = pytest.mark.functional


@pytest.fixture
def ecr(moto_server: str, aws_session: boto3.session.Session) -> EcrRegistry:
    return EcrRegistry(aws_session.client("ecr", endpoint_url=moto_server))


def test_a_repository_is_created_once_and_found_after(ecr: EcrRegistry) -> None:
    uri = ecr.ensure_repository("modelport-ecr-test")
    assert uri.endswith(".dkr.ecr.us-east-1.amazonaws.com/modelport-ecr-test")
    assert is_ecr_registry(uri.split("/")[0])
    assert ecr.ensure_repository("modelport-ecr-test") == uri
    found = ecr.client.describe_repositories(repositoryNames=["modelport-ecr-test"])["repositories"][0]
    assert found["imageScanningConfiguration"] == {"scanOnPush": True}
    policy = ecr.client.get_lifecycle_policy(repositoryName="modelport-ecr-test")["lifecyclePolicyText"]
    assert json.loads(policy) == json.loads(lifecycle_policy())
    assert json.loads(policy)["rules"][0]["selection"]["countNumber"] == KEEP_IMAGES


def test_the_login_token_decodes_to_user_and_password(ecr: EcrRegistry) -> None:
    auth = ecr.authorization()
    assert auth.username == "AWS" and auth.password
    assert auth.registry.endswith(".dkr.ecr.us-east-1.amazonaws.com")
    config = auth.auth_config()
    assert config["username"] == "AWS" and config["serveraddress"].startswith("https://")


def test_docker_login_hands_the_token_to_the_docker_client(ecr: EcrRegistry) -> None:
    calls: list[dict[str, Any]] = []

    class FakeDocker:
        def login(self, **kwargs: Any) -> dict[str, str]:
            calls.append(kwargs)
            return {"Status": "Login Succeeded"}

    auth = ecr.docker_login(FakeDocker())
    assert calls == [
        {"username": "AWS", "password": auth.password, "registry": auth.endpoint, "reauth": True}
    ]


def test_bad_names_and_tokens_are_refused() -> None:
    with pytest.raises(ConfigError):
        EcrRegistry(client=None).ensure_repository("Bad Name")
    with pytest.raises(RegistryError):
        decode_token("not base64!")
    with pytest.raises(RegistryError):
        decode_token(base64.b64encode(b"no-colon").decode())
    assert decode_token(base64.b64encode(b"AWS:p:w").decode()).password == "p:w"
    assert not is_ecr_registry("127.0.0.1:5000")
    assert not is_ecr_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com\n")
