"""Records the control plane keeps: accounts, keys, grants, models, versions, deployments, associations, jobs.

Plain frozen data, shared by the services, the in-memory twins and the DynamoDB adapters. Times are ISO-8601
UTC strings from an injected clock, so tests control them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from chalicelib.core.protocol import Frozen
from chalicelib.core.trace import valid_trace_id

VersionStatus = Literal["PENDING_UPLOAD", "DEPLOYING", "READY", "FAILED"]

DeploymentStage = Literal[
    "RECEIVED", "INSPECTED", "CONFIG_GENERATED", "IMAGE_BUILT", "FUNCTIONS_READY", "READY"
]
DEPLOYMENT_STAGES: tuple[DeploymentStage, ...] = (
    "RECEIVED",
    "INSPECTED",
    "CONFIG_GENERATED",
    "IMAGE_BUILT",
    "FUNCTIONS_READY",
    "READY",
)
DeploymentState = Literal[
    "RECEIVED", "INSPECTED", "CONFIG_GENERATED", "IMAGE_BUILT", "FUNCTIONS_READY", "READY", "FAILED"
]


class Account(Frozen):
    account_id: str
    name: str
    is_admin: bool = False
    created_at: str


class ApiKey(Frozen):
    """An API key at rest: only its lookup prefix and a hash of the secret are kept."""

    key_id: str = Field(description="public lookup prefix, the part before the secret")
    account_id: str
    secret_hash: str = Field(description="hex sha256 of the whole key")
    created_at: str
    revoked_at: str | None = None
    description: str = ""


class Grant(Frozen):
    """``grantee`` may invoke ``model_name`` (owned by another account)."""

    model_name: str
    grantee: str
    granted_by: str
    created_at: str


class ModelRecord(Frozen):
    name: str
    owner: str
    description: str = ""
    default_version: int | None = None
    latest_version: int = 0
    created_at: str


class VersionRecord(Frozen):
    name: str
    version: int
    status: VersionStatus
    created_at: str
    upload_key: str
    deployment_id: str | None = None
    manifest: str | None = Field(default=None, description="the model config file, JSON")
    reason: str | None = None


class StageRecord(Frozen):
    stage: DeploymentStage
    started_at: str
    finished_at: str


class Deployment(Frozen):
    """A recorded plan of stages; ``revision`` guards every write against a concurrent handler."""

    deployment_id: str
    model_name: str
    version: int
    source: str = Field(description="s3://bucket/key of the bundle")
    state: DeploymentState
    stages: tuple[StageRecord, ...] = ()
    reason: str | None = None
    attempts: int = 0
    lease_until: str | None = Field(default=None, description="a handler owns it until then")
    created_at: str
    updated_at: str
    revision: int = 0


class EnvironmentImage(Frozen):
    """The shared image of one environment fingerprint."""

    fingerprint: str
    image_uri: str
    image_digest: str
    size_bytes: int
    created_at: str


class ModelAssociation(Frozen):
    """Which image and functions run one model version."""

    model_name: str
    version: int
    fingerprint: str
    image_uri: str
    image_digest: str
    size_bytes: int
    functions: tuple[str, ...] = ()
    state_machine_arn: str | None = None
    created_at: str


JobStatus = Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
JOB_DONE: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
JOB_TTL_S = 7 * 24 * 3600
"""How long a job's record (and result) is kept after it was submitted (the jobs table's TTL)."""


class Job(Frozen):
    """An asynchronous invocation by an account: QUEUED -> RUNNING -> SUCCEEDED | FAILED (or CANCELLED
    while queued). Its request and its answer are objects in the data bucket, not in the record."""

    job_id: str
    account_id: str
    model_name: str
    version: int
    status: JobStatus
    input_key: str = Field(description="the request body's object key")
    input_bytes: int | None = Field(default=None, description="its size (None: a record made before sizes)")
    content_type: str
    accept: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    result_key: str | None = Field(default=None, description="the answer's object key, once there is one")
    result_type: str | None = None
    result_status: int | None = Field(default=None, description="the HTTP status the answer has")
    error: str | None = None
    webhook_url: str | None = None
    reply_to: str | None = Field(default=None, description="where a message-driven job's completion goes")
    message_id: str | None = Field(default=None, description="the queue message a job came from")
    webhook_status: Literal["PENDING", "DELIVERED", "FAILED"] | None = None
    webhook_attempts: int = 0
    webhook_error: str | None = None
    billed_ms: int | None = Field(default=None, description="Lambda's billed ms of the run (core/cost.py)")
    cost_pico_usd: int | None = Field(default=None, description="what the run cost, in 1e-12 USD")
    expires_at: int = Field(description="epoch seconds after which the table may drop the record (TTL)")
    trace_id: str | None = Field(
        default=None,
        description="the accepting request's (or message's) trace id, which the run keeps (None: older jobs)",
    )
    revision: int = 0

    @field_validator("trace_id")
    @classmethod
    def _trace_id(cls, value: str | None) -> str | None:
        if value is not None and valid_trace_id(value) is None:
            raise ValueError("not a trace id (1-<8 hex>-<24 hex>)")
        return value
