"""Names and limits of one stage, from environment variables: what every layer above may read.

Below the adapters and the wiring (it imports only core), so an adapter or a service can take settings without
reaching up into the composition root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core.errors import ConfigError

REVOCATION_WINDOW_S = 4
"""The longest a revoked key (or a rotated admin key) keeps working anywhere. On AWS, API Gateway keeps the
authorizer's answer this long (``ttl_seconds``) and the authorizer reads the store; locally, where nothing
caches in front of the authorizer, a process keeps a verified key at most half of it (an expired entry is
answered once more while it refreshes, so twice that)."""


TWIN = "memory"
"""The adapter setting that names the in-memory twins: stage ``local`` only."""


IMAGE_BUILDERS = ("oci", "docker", "process", TWIN)


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
    jobs_table: str = "modelport-jobs"
    usage_table: str = "modelport-usage"
    """Invocations, errors, billed ms, cost and latency per account, model and day (``GET /v1/usage``)."""
    bundle_bucket: str = "modelport-bundles"
    data_bucket: str = "modelport-data"
    deploy_queue: str = "modelport-deploy"
    jobs_queue: str = "modelport-jobs"
    invocations_queue: str = "modelport-invocations"
    """Message-driven invocations (``services/messages.py``); its dead letters: ``<name>-dlq``."""
    sync_wait_s: float = 25.0
    """How long a synchronous call that may outlive API Gateway's 29 s, run as a job, is waited for before
    it is answered 202 + Location (``MODELPORT_SYNC_WAIT_S``)."""
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
    image_builder: str = TWIN
    """``oci`` builds daemonlessly (the deploy worker on AWS); ``docker`` builds real images with the engine
    (CLI, CI, the local stack); ``process`` builds the process images the local stack runs without an
    engine; ``memory`` is the twin."""
    registry: str | None = None
    """Where built images are pushed: ``127.0.0.1:5000``, ``ecr``, or nowhere (the local engine)."""
    functions: str = TWIN
    """``lambda`` creates the model functions through the Lambda API (AWS or the local stack's emulator);
    ``memory`` is the twin."""
    function_role: str = "arn:aws:iam::000000000000:role/modelport-functions"
    """The execution role of model functions (``MODELPORT_FUNCTION_ROLE``; on AWS, the stage's role)."""
    states_role: str | None = None
    """The role chained pipelines' state machines run as (``MODELPORT_STATES_ROLE``; it may invoke the
    ``modelport-*`` functions); unset: ``function_role``, which must then trust states.amazonaws.com."""
    states_log_group: str | None = None
    """The CloudWatch Logs group ARN (``arn:...:log-group:NAME:*``) the state machines' execution logs go to
    (``MODELPORT_STATES_LOG_GROUP``, the template's ``StatesLogGroup``); unset:
    ``/aws/vendedlogs/states/modelport`` in the functions' account and region."""
    cache_ttl_s: float = REVOCATION_WINDOW_S / 2
    """How long a process keeps a verified key and the version a request resolves to (0: not at all);
    changes made through the same process are seen at once, others within twice this time (an expired
    entry is answered once more while a background lookup refreshes it). Verified keys are kept at most
    ``REVOCATION_WINDOW_S / 2`` whatever this says, and on a deployed stage not at all: there API Gateway
    keeps the authorizer's answer for ``REVOCATION_WINDOW_S``."""
    sandbox: str | None = None
    """Where pickles and trusted-type .skops files are opened: ``docker`` (a locked-down container),
    ``lambda`` (the probe function), ``none`` (refused); unset: ``docker`` with the docker image builder,
    else ``none``."""
    probe_role: str = "arn:aws:iam::000000000000:role/modelport-probe"
    """The probe function's execution role (``MODELPORT_PROBE_ROLE``): one that grants nothing."""
    wheel_cache_prefix: str = "wheels/"
    """Where in the bundle bucket the shared wheel cache lives (``MODELPORT_WHEEL_CACHE_PREFIX``; the deploy
    worker reads it first and fills it on a miss; the local stack pre-fills it from the host)."""
    api_log_group: str | None = None
    """The API function's own log group, whose lines of a model its owner may read (``GET
    /v1/models/{name}/logs``): ``MODELPORT_API_LOG_GROUP``, else Lambda's ``AWS_LAMBDA_LOG_GROUP_NAME``."""
    worker_function: str = "modelport-deploy-worker"
    """The deploy worker's function name (``MODELPORT_WORKER_FUNCTION``): the container-image Lambda that the
    deploy queue feeds, which builds images daemonlessly."""

    def __post_init__(self) -> None:
        """Start-up checks: a deployed stage never takes the admin key from its environment, and never
        runs on the twins (which would mark versions READY with images and functions that do not exist)."""
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
        if self.image_builder not in IMAGE_BUILDERS:
            raise ConfigError(
                f"MODELPORT_IMAGE_BUILDER={self.image_builder[:40]!r} names no image builder",
                hint="one of " + ", ".join(IMAGE_BUILDERS),
            )
        given = [name for name, value in sources.items() if value]
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)} are both set: name one source of the admin key")
        if self.stage == "local":
            return
        for variable, value, real in (
            ("MODELPORT_IMAGE_BUILDER", self.image_builder, "oci (with MODELPORT_REGISTRY=ecr)"),
            ("MODELPORT_FUNCTIONS", self.functions, "lambda"),
        ):
            if value in ("", TWIN):
                raise ConfigError(
                    f"{variable} is unset or {TWIN!r} on stage {self.stage[:40]!r}: a deployed stage does "
                    "not run on the in-memory twins",
                    hint=f"set {variable} to {real} in the stage's environment (.chalice/config.json)",
                )
        if self.image_builder in ("oci", "docker") and not self.registry:
            raise ConfigError(
                f"MODELPORT_REGISTRY is unset on stage {self.stage[:40]!r}: the {self.image_builder} builder "
                "has nowhere to push the images the model functions run",
                hint="set MODELPORT_REGISTRY to ecr (or a registry host[:port]) in the stage's environment",
            )

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
            jobs_table=get("jobs_table", defaults.jobs_table),
            usage_table=get("usage_table", defaults.usage_table),
            bundle_bucket=get("bundle_bucket", defaults.bundle_bucket),
            data_bucket=get("data_bucket", defaults.data_bucket),
            deploy_queue=get("deploy_queue", defaults.deploy_queue),
            jobs_queue=get("jobs_queue", defaults.jobs_queue),
            invocations_queue=get("invocations_queue", defaults.invocations_queue),
            sync_wait_s=float(get("sync_wait_s", defaults.sync_wait_s)),
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
            states_log_group=get("states_log_group", None),
            cache_ttl_s=float(get("cache_ttl_s", defaults.cache_ttl_s)),
            sandbox=get("sandbox", None),
            probe_role=get("probe_role", defaults.probe_role),
            wheel_cache_prefix=get("wheel_cache_prefix", defaults.wheel_cache_prefix),
            worker_function=get("worker_function", defaults.worker_function),
            api_log_group=get("api_log_group", None) or env.get("AWS_LAMBDA_LOG_GROUP_NAME") or None,
        )


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the variables ``Settings.from_env`` reads back (for a process of the same stack)."""
    env = {"AWS_REGION": settings.region, "AWS_DEFAULT_REGION": settings.region}
    for name, value in vars(settings).items():
        if name == "region" or value is None:
            continue
        env["MODELPORT_ENDPOINT_URL" if name == "endpoint_url" else f"MODELPORT_{name.upper()}"] = str(value)
    return env
