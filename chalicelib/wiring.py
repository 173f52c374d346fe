"""The composition root: builds the adapters once, lazily, from settings; tests swap in their own.

Nothing reads the environment or creates a client at import time. Locally and on AWS the same boto3
adapters are built; only ``endpoint_url`` differs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.core.clock import utc_now
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
    JobQueue,
    JobStore,
    LogReader,
    ModelStore,
    Outbox,
    RepositoryHost,
    RetryQueue,
    Sandbox,
    SecretSource,
    UsageStore,
)
from chalicelib.services.bundles import BundleLimits
from chalicelib.services.deployments import DeploymentService
from chalicelib.settings import Settings


@dataclass
class Container:
    settings: Settings
    clock: Clock
    accounts: AccountStore
    models: ModelStore
    deployments: DeploymentStore
    associations: AssociationStore
    artifacts: ArtifactStore
    data: ArtifactStore
    """The data bucket: batch inputs (``inputs/<model>/``) and their outputs (``outputs/<model>/``)."""
    images: ImageBuilder
    functions: FunctionManager
    invoker: FunctionInvoker
    jobs: JobStore
    job_queue: JobQueue
    usage: UsageStore
    """Usage counters per account, model and day (``services/usage.py`` buffers what it adds)."""
    logs: LogReader | None = None
    """Where functions' log lines are read back (CloudWatch Logs); None: nowhere here."""
    admin_key: SecretSource | None = None
    """Where the bootstrap admin key is read; only the API's authorizer reads it (``AccountService``)."""
    sandbox: Sandbox = field(default_factory=lambda: _no_sandbox())
    outbox: Outbox | None = None
    """Where message-driven invocations answer (reply queues, buses) and their dead letters go."""
    retries: RetryQueue | None = None
    """Where an SQS handler shortens a failed message's way back (the deploy worker)."""
    shared_stages: bool = False
    """The image builder makes shared steps images, so chained pipelines' pre and post run on shared stage
    functions; the deployment service decides ``pipeline: auto`` with it (``core.pipeline.plan_pipeline``)."""


def _no_sandbox(why: str = "none is configured here") -> Sandbox:
    from chalicelib.core.probe import NoSandbox

    return NoSandbox(why)


def _sandbox(settings: Settings, images: ImageBuilder, lambda_client: Any, s3: Any) -> Sandbox:
    """The ``Sandbox`` settings name; ``ConfigError`` for one that cannot work with this image builder."""

    kind = settings.sandbox or ("docker" if settings.image_builder == "docker" else "none")
    if kind == "none":
        return _no_sandbox()
    from chalicelib.docker.builder import DockerImageBuilder
    from chalicelib.oci.builder import OciImageBuilder

    if kind == "docker" and isinstance(images, DockerImageBuilder):
        from chalicelib.docker.sandbox import DockerSandbox

        return DockerSandbox(images)
    if kind != "lambda" or not isinstance(images, (DockerImageBuilder, OciImageBuilder)):
        raise ConfigError(
            f"MODELPORT_SANDBOX={kind[:20]} needs an image builder that builds the probe image "
            "(docker: MODELPORT_IMAGE_BUILDER=docker; lambda: docker or oci)",
            hint="set MODELPORT_SANDBOX to docker, lambda or none",
        )
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


def _image_builder(
    settings: Settings,
    associations: AssociationStore,
    clock: Clock,
    ecr_client: Any,
    artifacts: ArtifactStore | None = None,
) -> ImageBuilder:
    """The ``ImageBuilder`` settings name (``ecr_client()`` makes the ECR client when one is needed); the
    daemonless builder shares its wheels through ``artifacts`` (the bundle bucket)."""
    from chalicelib.memory.stores import MemoryImageBuilder

    images: ImageBuilder = MemoryImageBuilder(clock, associations=associations)
    if settings.image_builder == "docker":
        from chalicelib.docker.builder import DockerImageBuilder

        ecr = ecr_client()
        images = DockerImageBuilder(
            registry=settings.registry,
            associations=associations,
            clock=clock,
            repositories=repository_host(settings.registry, ecr),
        )
    elif settings.image_builder == "oci":
        from chalicelib.oci.builder import OciImageBuilder

        if not settings.registry:
            raise ConfigError("MODELPORT_IMAGE_BUILDER=oci needs MODELPORT_REGISTRY (host:port or ecr)")
        from chalicelib.docker.wheel_cache import ArtifactWheelCache

        ecr = ecr_client()
        images = OciImageBuilder(
            settings.registry,
            associations=associations,
            clock=clock,
            repositories=repository_host(settings.registry, ecr),
            wheel_cache=(
                ArtifactWheelCache(artifacts, settings.wheel_cache_prefix) if artifacts is not None else None
            ),
        )
    elif settings.image_builder == "process":
        from chalicelib.docker.process import ProcessImageBuilder

        images = ProcessImageBuilder(associations=associations, clock=clock)
    return images


def _admin_key(settings: Settings, session: Any, config: Any) -> SecretSource | None:
    """Where the settings say the admin key is kept (one source at most: ``Settings`` checked it)."""
    if settings.admin_key_secret:
        from chalicelib.aws.secrets import SecretsManagerSecret

        secrets = session.client("secretsmanager", endpoint_url=settings.endpoint_url, config=config)
        return SecretsManagerSecret(secrets, settings.admin_key_secret)
    if settings.admin_key_parameter:
        from chalicelib.aws.secrets import SsmSecureString

        ssm = session.client("ssm", endpoint_url=settings.endpoint_url, config=config)
        return SsmSecureString(ssm, settings.admin_key_parameter)
    if settings.admin_key:
        from chalicelib.memory.secrets import MemorySecret

        return MemorySecret(settings.admin_key, "MODELPORT_ADMIN_KEY")
    return None


def aws_container(settings: Settings, clock: Clock = utc_now) -> Container:
    import boto3
    from botocore.config import Config

    from chalicelib.aws.dynamodb import (
        DynamoAccountStore,
        DynamoAssociationStore,
        DynamoDeploymentStore,
        DynamoJobStore,
        DynamoModelStore,
        DynamoUsageStore,
    )
    from chalicelib.aws.invoke import LambdaInvoker
    from chalicelib.aws.jobs_queue import SqsJobQueue
    from chalicelib.aws.logs import CloudWatchLogReader
    from chalicelib.aws.outbox import AwsOutbox
    from chalicelib.aws.s3 import S3ArtifactStore
    from chalicelib.aws.sqs import SqsRetryQueue
    from chalicelib.memory.stores import MemoryFunctionManager

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
    artifacts = S3ArtifactStore(settings.bundle_bucket, s3)
    sqs_client = session.client("sqs", endpoint_url=settings.endpoint_url, config=quick)
    images = _image_builder(
        settings,
        associations,
        clock,
        lambda: session.client("ecr", endpoint_url=settings.endpoint_url, config=quick),
        artifacts,
    )
    functions: FunctionManager = MemoryFunctionManager()
    if settings.functions == "lambda":
        from chalicelib.aws.functions import LambdaFunctionManager

        functions = LambdaFunctionManager(
            lambda_client,
            settings.function_role,
            sfn_client=sfn,
            states_role_arn=settings.states_role,
            states_log_group_arn=settings.states_log_group,
        )
    return Container(
        settings=settings,
        clock=clock,
        accounts=DynamoAccountStore(settings.accounts_table, dynamodb),
        models=DynamoModelStore(settings.models_table, dynamodb),
        deployments=DynamoDeploymentStore(settings.deployments_table, dynamodb),
        associations=associations,
        artifacts=artifacts,
        data=S3ArtifactStore(settings.data_bucket, s3),
        images=images,
        functions=functions,
        invoker=LambdaInvoker(lambda_client, sfn),
        jobs=DynamoJobStore(settings.jobs_table, dynamodb),
        job_queue=SqsJobQueue(sqs_client, settings.jobs_queue),
        usage=DynamoUsageStore(settings.usage_table, dynamodb),
        logs=CloudWatchLogReader(session.client("logs", endpoint_url=settings.endpoint_url, config=quick)),
        admin_key=_admin_key(settings, session, quick),
        sandbox=_sandbox(settings, images, lambda_client, s3),
        retries=SqsRetryQueue(sqs_client),
        outbox=AwsOutbox(
            sqs_client,
            session.client("events", endpoint_url=settings.endpoint_url, config=quick),
            f"{settings.invocations_queue}-dlq",
        ),
        shared_stages=settings.image_builder in ("docker", "oci", "process"),  # they build steps images
    )


def memory_container(settings: Settings | None = None, clock: Clock = utc_now) -> Container:
    from chalicelib.memory.logs import MemoryLogReader
    from chalicelib.memory.secrets import MemorySecret
    from chalicelib.memory.stores import (
        MemoryAccountStore,
        MemoryArtifactStore,
        MemoryAssociationStore,
        MemoryDeploymentStore,
        MemoryFunctionManager,
        MemoryImageBuilder,
        MemoryInvoker,
        MemoryJobQueue,
        MemoryJobStore,
        MemoryModelStore,
        MemoryOutbox,
        MemoryRetryQueue,
        MemoryUsageStore,
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
        data=MemoryArtifactStore(),
        images=MemoryImageBuilder(clock, associations=associations),
        functions=MemoryFunctionManager(),
        invoker=MemoryInvoker(),
        jobs=MemoryJobStore(),
        job_queue=MemoryJobQueue(),
        usage=MemoryUsageStore(),
        logs=MemoryLogReader(),
        retries=MemoryRetryQueue(),
        outbox=MemoryOutbox(),
        admin_key=MemorySecret(settings.admin_key, "MODELPORT_ADMIN_KEY") if settings.admin_key else None,
    )


def deployment_service(
    c: Container, *, limits: BundleLimits | None = None, scratch: Path | None = None
) -> DeploymentService:
    """The deployment service on ``c``'s ports (the service never sees the container itself)."""
    from chalicelib.aws.outage import outage

    return DeploymentService(
        models=c.models,
        deployments=c.deployments,
        artifacts=c.artifacts,
        images=c.images,
        functions=c.functions,
        associations=c.associations,
        sandbox=c.sandbox,
        clock=c.clock,
        bundle_bucket=c.settings.bundle_bucket,
        max_bundle_bytes=c.settings.max_bundle_bytes,
        shared_stages=c.shared_stages,
        outage=outage,
        limits=limits,
        scratch=scratch,
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
