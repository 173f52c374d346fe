"""The ECR adapter: one repository per model (created if missing) and registry credentials for a push.

ECR's registry login is a short-lived token from ``GetAuthorizationToken``: base64 of ``AWS:<password>``,
valid for 12 hours, for the registry at ``proxyEndpoint``. The docker engine gets it either through
``docker_login`` (kept in the client for later pushes) or as a push's ``auth_config``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws.outage import translates_outages
from chalicelib.core.errors import ConfigError, Forbidden, ModelportError

EcrClient = Any
"""A low-level ``boto3.client("ecr")``; typed ``Any`` because boto3 ships no stubs."""

ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)
REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
KEEP_IMAGES = 10
REGISTRY_PUSH_ACTIONS: tuple[str, ...] = (
    # the registry API calls of chalicelib.oci.registry (HEAD/GET blobs and manifests, uploads, mounts, puts)
    "ecr:GetAuthorizationToken",
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    # EcrRegistry.ensure_repository
    "ecr:CreateRepository",
    "ecr:TagResource",
    "ecr:PutLifecyclePolicy",
    "ecr:DescribeRepositories",
)
"""The IAM actions a push to ECR needs; the stack template's worker policy grants these (tests compare)."""


def lifecycle_policy() -> str:
    """Every Modelport repository keeps its newest ``KEEP_IMAGES`` images (an old version's image goes; its
    version's function keeps running, Lambda holds its own copy of the image)."""
    rule = {
        "rulePriority": 1,
        "description": f"keep the newest {KEEP_IMAGES} images",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_IMAGES},
        "action": {"type": "expire"},
    }
    return json.dumps({"rules": [rule]}, sort_keys=True)


class RegistryError(ModelportError):
    """ECR refused a request or cannot be reached."""

    http_status = 502
    code = "RegistryError"


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password: str
    endpoint: str = ""

    @property
    def registry(self) -> str:
        """The registry host (``proxyEndpoint`` without its scheme)."""
        return re.sub(r"^https?://", "", self.endpoint).rstrip("/")

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.endpoint}


def is_ecr_registry(registry: str) -> bool:
    return ECR_HOST.fullmatch(registry) is not None


@translates_outages
class EcrRegistry:
    def __init__(self, client: EcrClient) -> None:
        self.client = client

    def ensure_repository(self, name: str) -> str:
        """The URI of repository ``name``, creating it (scan on push, mutable tags, the lifecycle policy) if
        it does not exist. (A repository creation template applies to CREATE_ON_PUSH, not to this call.)"""
        if not REPOSITORY.fullmatch(name) or len(name) > 256:
            raise ConfigError(f"{name!r} is not an ECR repository name", path="repository")
        try:
            created = self.client.create_repository(
                repositoryName=name,
                imageTagMutability="MUTABLE",
                imageScanningConfiguration={"scanOnPush": True},
                tags=[{"Key": "modelport", "Value": "model"}],
            )
            self.client.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=lifecycle_policy())
            return str(created["repository"]["repositoryUri"])
        except ClientError as err:
            if _code(err) != "RepositoryAlreadyExistsException":
                raise _translate(err, f"creating ECR repository {name}") from None
        except BotoCoreError as err:
            raise RegistryError(f"creating ECR repository {name}: {err}") from None
        try:
            found = self.client.describe_repositories(repositoryNames=[name])
        except (ClientError, BotoCoreError) as err:
            raise _translate(err, f"describing ECR repository {name}") from None
        return str(found["repositories"][0]["repositoryUri"])

    def authorization(self) -> RegistryAuth:
        """Decode the account registry's login token (``AWS:<password>``)."""
        try:
            data = self.client.get_authorization_token()["authorizationData"][0]
        except (ClientError, BotoCoreError) as err:
            raise _translate(err, "getting an ECR login token") from None
        return decode_token(str(data["authorizationToken"]), str(data.get("proxyEndpoint", "")))

    def docker_login(self, docker_client: Any) -> RegistryAuth:
        """Log the docker client in to the account's registry; its later pushes there use the token."""
        auth = self.authorization()
        try:
            docker_client.login(
                username=auth.username, password=auth.password, registry=auth.endpoint, reauth=True
            )
        except Exception as err:  # docker.errors.APIError: the engine could not log in
            raise RegistryError(f"docker login to {auth.registry} failed: {err}") from None
        return auth


def decode_token(token: str, endpoint: str = "") -> RegistryAuth:
    try:
        text = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise RegistryError("ECR returned a login token that is not base64 'user:password'") from None
    username, sep, password = text.partition(":")
    if not sep or not username or not password:
        raise RegistryError("ECR returned a login token that is not 'user:password'")
    return RegistryAuth(username=username, password=password, endpoint=endpoint)


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _translate(err: ClientError | BotoCoreError, doing: str) -> ModelportError:
    if isinstance(err, ClientError):
        code = _code(err)
        message = err.response.get("Error", {}).get("Message", "")
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
            return Forbidden(f"{doing}: {code}: {message}")
        return RegistryError(f"{doing}: {code}: {message}")
    return RegistryError(f"{doing}: {err}")
