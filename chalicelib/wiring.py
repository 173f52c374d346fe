"""The composition root: builds the adapters once, lazily, from settings; tests swap in their own.

Nothing reads the environment or creates a client at import time. Locally and on AWS the same boto3
adapters are built; only ``endpoint_url`` differs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.core.errors import ConfigError
from chalicelib.core.ports import (
    AccountStore,
    ArtifactStore,
    AssociationStore,
    Clock,
    DeploymentStore,
    FunctionInvoker,
    FunctionManager,
    ImageBuilder,
    ModelStore,
    RepositoryHost,
    Sandbox,
    SecretSource,
)
from chalicelib.services.accounts import REVOCATION_WINDOW_S


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Settings:
    """Names and limits, from environment variables set by ``.chalice/config.json`` or the local stack."""

    stage: str = "local"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    accounts_table: str = "modelport-accounts"
    models_table: str = "modelport-models"
    deployments_table: str = "modelport-deployments"
    associations_table: str = "modelport-associations"
    bundle_bucket: str = "modelport-bundles"
    deploy_queue: str = "modelport-deploy"
    max_bundle_bytes: int = 512 * 1024 * 1024
    upload_expires_s: int = 900
    admin_key: str | None = field(default=None, repr=False)
    """The bootstrap admin key in plain text (``MODELPORT_ADMIN_KEY``): stage ``local`` only."""
    admin_key_secret: str | None = None
    """A Secrets Manager secret (name or ARN) holding the admin key (``MODELPORT_ADMIN_KEY_SECRET``)."""
    admin_key_parameter: str | None = None
    """An SSM SecureString parameter holding the admin key (``MODELPORT_ADMIN_KEY_PARAMETER``)."""
    secret_ttl_s: float = 300.0
    """How long a process keeps the admin key it read before reading it again (a rotation lands then)."""
    image_builder: str = "memory"
    """``docker`` builds real images with the engine (CLI, CI, the local stack); ``process`` builds the
    process images the local stack runs without an engine; ``memory`` is the twin."""
    registry: str | None = None
    """Where built images are pushed: ``127.0.0.1:5000``, ``ecr``, or nowhere (the local engine)."""
    functions: str = "memory"
    """``lambda`` creates the model functions through the Lambda API (AWS or the local stack's emulator);
    ``memory`` is the twin."""
    function_role: str = "arn:aws:iam::000000000000:role/modelport-functions"
    states_role: str | None = None
    """The role chained pipelines' state machines run as (``MODELPORT_STATES_ROLE``; it may invoke the
    ``modelport-*`` functions); unset: ``function_role``, which must then trust states.amazonaws.com."""
    cache_ttl_s: float = REVOCATION_WINDOW_S / 2
    """How long a process keeps a verified key and the version a request resolves to (0: not at all);
    changes made through the same process are seen at once, others within twice this time (an expired
    entry is answered once more while a background lookup refreshes it). Verified keys are kept at most
    ``REVOCATION_WINDOW_S / 2`` whatever this says, and on a deployed stage not at all: there API Gateway
    keeps the authorizer's answer for ``REVOCATION_WINDOW_S``."""
    """The execution role of model functions (``MODELPORT_FUNCTION_ROLE``; on AWS, the stage's role)."""
    sandbox: str | None = None
    """Where pickles and trusted-type .skops files are opened: ``docker`` (a locked-down container),
    ``lambda`` (the probe function), ``none`` (refused); unset: ``docker`` with the docker image builder,
    else ``none``."""
    probe_role: str = "arn:aws:iam::000000000000:role/modelport-probe"
    """The probe function's execution role (``MODELPORT_PROBE_ROLE``): one that grants nothing."""

    def __post_init__(self) -> None:
        """A start-up check: a deployed stage never takes the admin key from its environment."""
        if self.admin_key and self.stage != "local":
            raise ConfigError(
                f"MODELPORT_ADMIN_KEY is set on stage {self.stage[:40]!r}: a deployed stage never holds the "
                "admin key in plain text",
                hint="store it in Secrets Manager (MODELPORT_ADMIN_KEY_SECRET) or as an SSM SecureString "
                "(MODELPORT_ADMIN_KEY_PARAMETER) and unset MODELPORT_ADMIN_KEY",
            )
        sources = {
            "MODELPORT_ADMIN_KEY": self.admin_key,
            "MODELPORT_ADMIN_KEY_SECRET": self.admin_key_secret,
            "MODELPORT_ADMIN_KEY_PARAMETER": self.admin_key_parameter,
        }
        given = [name for name, value in sources.items() if value]
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)} are both set: name one source of the admin key")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: Any) -> Any:
            return env.get(f"MODELPORT_{name.upper()}", default)

        return cls(
            stage=get("stage", defaults.stage),
            region=env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", defaults.region)),
            endpoint_url=env.get("MODELPORT_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
            accounts_table=get("accounts_table", defaults.accounts_table),
            models_table=get("models_table", defaults.models_table),
            deployments_table=get("deployments_table", defaults.deployments_table),
            associations_table=get("associations_table", defaults.associations_table),
            bundle_bucket=get("bundle_bucket", defaults.bundle_bucket),
            deploy_queue=get("deploy_queue", defaults.deploy_queue),
            max_bundle_bytes=int(get("max_bundle_bytes", defaults.max_bundle_bytes)),
            upload_expires_s=int(get("upload_expires_s", defaults.upload_expires_s)),
            admin_key=get("admin_key", None),
            admin_key_secret=get("admin_key_secret", None),
            admin_key_parameter=get("admin_key_parameter", None),
            secret_ttl_s=float(get("secret_ttl_s", defaults.secret_ttl_s)),
            image_builder=get("image_builder", defaults.image_builder),
            registry=get("registry", None),
            functions=get("functions", defaults.functions),
            function_role=get("function_role", defaults.function_role),
            states_role=get("states_role", None),
            cache_ttl_s=float(get("cache_ttl_s", defaults.cache_ttl_s)),
            sandbox=get("sandbox", None),
            probe_role=get("probe_role", defaults.probe_role),
        )


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the variables ``Settings.from_env`` reads back (for a process of the same stack)."""
    env = {"AWS_REGION": settings.region, "AWS_DEFAULT_REGION": settings.region}
    for name, value in vars(settings).items():
        if name == "region" or value is None:
            continue
        env["MODELPORT_ENDPOINT_URL" if name == "endpoint_url" else f"MODELPORT_{name.upper()}"] = str(value)
    return env


@dataclass
class Container:
    settings: Settings
    clock: Clock
    accounts: AccountStore
    models: ModelStore
    deployments: DeploymentStore
    associations: AssociationStore
    artifacts: ArtifactStore
    images: ImageBuilder
    functions: FunctionManager
    invoker: FunctionInvoker
    admin_key: SecretSource | None = None
    """Where the bootstrap admin key is read; only the API's authorizer reads it (``AccountService``)."""
    sandbox: Sandbox = field(default_factory=lambda: _no_sandbox())
    shared_stages: bool = False
    """The image builder makes shared steps images, so chained pipelines' pre and post run on shared stage
    functions; the deployment service decides ``pipeline: auto`` with it (``core.pipeline.plan_pipeline``)."""


def _no_sandbox(why: str = "none is configured here") -> Sandbox:
    from chalicelib.memory.sandbox import NoSandbox

    return NoSandbox(why)


def _sandbox(settings: Settings, images: ImageBuilder, lambda_client: Any, s3: Any) -> Sandbox:
    """The ``Sandbox`` settings name; ``ConfigError`` for one that cannot work with this image builder."""
    from chalicelib.core.errors import ConfigError

    kind = settings.sandbox or ("docker" if settings.image_builder == "docker" else "none")
    if kind == "none":
        return _no_sandbox()
    from chalicelib.docker.builder import DockerImageBuilder

    if kind not in ("docker", "lambda") or not isinstance(images, DockerImageBuilder):
        raise ConfigError(
            f"MODELPORT_SANDBOX={kind[:20]} needs MODELPORT_IMAGE_BUILDER=docker (it builds the probe image)",
            hint="set MODELPORT_SANDBOX to docker, lambda or none",
        )
    if kind == "docker":
        from chalicelib.docker.sandbox import DockerSandbox

        return DockerSandbox(images)
    from chalicelib.aws.sandbox import LambdaSandbox, S3Staging

    return LambdaSandbox(
        lambda_client,
        settings.probe_role,
        probe_image=images.probe_image,
        staging=S3Staging(s3, settings.bundle_bucket),
    )


def repository_host(registry: str | None, ecr_client: Any = None) -> RepositoryHost | None:
    """The ECR adapter when ``registry`` is ECR (``ecr`` or an ECR host), for ``DockerImageBuilder``;
    None for any other registry (pushed to as it is). Without ``ecr_client``, one for the host's region."""
    if registry is None:
        return None
    from chalicelib.aws.ecr import ECR_HOST, EcrRegistry

    host = ECR_HOST.fullmatch(registry.rstrip("/"))
    if registry != "ecr" and host is None:
        return None
    if ecr_client is None:
        import boto3

        ecr_client = boto3.client("ecr", region_name=host.group("region") if host else None)
    return EcrRegistry(ecr_client)


def aws_container(settings: Settings, clock: Clock = utc_now) -> Container:
    import boto3
    from botocore.config import Config

    from chalicelib.aws.dynamodb import (
        DynamoAccountStore,
        DynamoAssociationStore,
        DynamoDeploymentStore,
        DynamoModelStore,
    )
    from chalicelib.aws.invoke import LambdaInvoker
    from chalicelib.aws.s3 import S3ArtifactStore
    from chalicelib.memory.secrets import MemorySecret
    from chalicelib.memory.stores import MemoryFunctionManager, MemoryImageBuilder

    session = boto3.session.Session(region_name=settings.region)
    # Bounded retries and timeouts: a service that does not answer is a 503 in seconds (API Gateway
    # gives up after 29 s), where botocore's DynamoDB default (10 attempts) takes ~25 s.
    quick = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)
    # Invocations wait as long as a function may run (Lambda's limit, 900 s).
    long = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=905)
    dynamodb = session.client("dynamodb", endpoint_url=settings.endpoint_url, config=quick)
    s3 = session.client("s3", endpoint_url=settings.endpoint_url, config=quick)
    lambda_client = session.client("lambda", endpoint_url=settings.endpoint_url, config=long)
    # Express sync executions go to a "sync-" host prefix that local endpoints don't answer.
    sfn = session.client(
        "stepfunctions",
        endpoint_url=settings.endpoint_url,
        config=long.merge(Config(inject_host_prefix=settings.endpoint_url is None)),
    )
    associations = DynamoAssociationStore(settings.associations_table, dynamodb)
    images: ImageBuilder = MemoryImageBuilder(clock, associations=associations)
    if settings.image_builder == "docker":
        from chalicelib.docker.builder import DockerImageBuilder

        ecr = session.client("ecr", endpoint_url=settings.endpoint_url, config=quick)
        images = DockerImageBuilder(
            registry=settings.registry,
            associations=associations,
            clock=clock,
            repositories=repository_host(settings.registry, ecr),
        )
    elif settings.image_builder == "process":
        from chalicelib.docker.process import ProcessImageBuilder

        images = ProcessImageBuilder(associations=associations, clock=clock)
    functions: FunctionManager = MemoryFunctionManager()
    if settings.functions == "lambda":
        from chalicelib.aws.functions import LambdaFunctionManager

        functions = LambdaFunctionManager(
            lambda_client, settings.function_role, sfn_client=sfn, states_role_arn=settings.states_role
        )
    admin_key: SecretSource | None = None
    if settings.admin_key_secret:
        from chalicelib.aws.secrets import SecretsManagerSecret

        secrets = session.client("secretsmanager", endpoint_url=settings.endpoint_url, config=quick)
        admin_key = SecretsManagerSecret(secrets, settings.admin_key_secret)
    elif settings.admin_key_parameter:
        from chalicelib.aws.secrets import SsmSecureString

        ssm = session.client("ssm", endpoint_url=settings.endpoint_url, config=quick)
        admin_key = SsmSecureString(ssm, settings.admin_key_parameter)
    elif settings.admin_key:
        admin_key = MemorySecret(settings.admin_key, "MODELPORT_ADMIN_KEY")
    return Container(
        settings=settings,
        clock=clock,
        accounts=DynamoAccountStore(settings.accounts_table, dynamodb),
        models=DynamoModelStore(settings.models_table, dynamodb),
        deployments=DynamoDeploymentStore(settings.deployments_table, dynamodb),
        associations=associations,
        artifacts=S3ArtifactStore(settings.bundle_bucket, s3),
        images=images,
        functions=functions,
        invoker=LambdaInvoker(lambda_client, sfn),
        admin_key=admin_key,
        sandbox=_sandbox(settings, images, lambda_client, s3),
        shared_stages=settings.image_builder in ("docker", "process"),  # they build steps images
    )


def memory_container(settings: Settings | None = None, clock: Clock = utc_now) -> Container:
    from chalicelib.memory.secrets import MemorySecret
    from chalicelib.memory.stores import (
        MemoryAccountStore,
        MemoryArtifactStore,
        MemoryAssociationStore,
        MemoryDeploymentStore,
        MemoryFunctionManager,
        MemoryImageBuilder,
        MemoryInvoker,
        MemoryModelStore,
    )

    settings = settings or Settings()
    associations = MemoryAssociationStore()
    return Container(
        settings=settings,
        clock=clock,
        accounts=MemoryAccountStore(),
        models=MemoryModelStore(),
        deployments=MemoryDeploymentStore(),
        associations=associations,
        artifacts=MemoryArtifactStore(),
        images=MemoryImageBuilder(clock, associations=associations),
        functions=MemoryFunctionManager(),
        invoker=MemoryInvoker(),
        admin_key=MemorySecret(settings.admin_key, "MODELPORT_ADMIN_KEY") if settings.admin_key else None,
    )


_lock = threading.Lock()
_current: Container | None = None


def container() -> Container:
    """The process's container, built on first use from the environment."""
    global _current
    with _lock:
        if _current is None:
            _current = aws_container(Settings.from_env())
        return _current


def override(replacement: Container | None) -> None:
    """Tests (and the local stack) install their own container; None resets to lazy defaults."""
    global _current
    with _lock:
        _current = replacement
