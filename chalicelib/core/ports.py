"""The ports the services use; each has an in-memory twin and a backend adapter behind one contract suite.

Every method raises only ``chalicelib.core.errors`` types: ``NotFound`` for a missing item, ``Conflict`` for
a failed condition (an item that exists already, a stale revision, a version that is the default).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from chalicelib.core.config_file import ContainerAssociation, DeployedFunctions, ModelConfigFile
from chalicelib.core.errors import InvalidRequest
from chalicelib.core.native import NativeContract
from chalicelib.core.probe import ProbeRequest
from chalicelib.core.protocol import Frozen
from chalicelib.core.records import (
    Account,
    ApiKey,
    Deployment,
    EnvironmentImage,
    Grant,
    Job,
    ModelAssociation,
    ModelRecord,
    VersionRecord,
)
from chalicelib.core.usage import UsageDay
from chalicelib.core.wire import InvocationEvent

Clock = Callable[[], str]
"""Returns the current time as an ISO-8601 UTC string."""

Progress = Callable[[str], None]
"""Receives one line of progress for long work (builds, pushes)."""


class AccountStore(Protocol):
    def put_account(self, account: Account) -> None:
        """Conflict if the id is taken."""

    def get_account(self, account_id: str) -> Account: ...

    def list_accounts(self) -> list[Account]: ...

    def webhook_secret(self, account_id: str, candidate: str) -> str:
        """The account's webhook signing secret: ``candidate`` kept if it has none yet (first writer wins)."""

    def put_key(self, key: ApiKey) -> None:
        """Conflict if the key id is taken."""

    def get_key(self, key_id: str) -> ApiKey: ...

    def list_keys(self, account_id: str) -> list[ApiKey]: ...

    def revoke_key(self, key_id: str, at: str) -> ApiKey: ...

    def put_grant(self, grant: Grant) -> None:
        """Idempotent."""

    def delete_grant(self, model_name: str, grantee: str) -> None:
        """NotFound if there is no such grant."""

    def list_grants(self, model_name: str) -> list[Grant]: ...

    def granted_models(self, grantee: str) -> list[str]:
        """Names of the models other accounts let ``grantee`` invoke, sorted."""

    def has_grant(self, model_name: str, grantee: str) -> bool: ...


class ModelStore(Protocol):
    def create_model(self, model: ModelRecord) -> None:
        """Conflict if the name is taken."""

    def get_model(self, name: str) -> ModelRecord: ...

    def list_models(self, owner: str) -> list[ModelRecord]:
        """The owner's models, sorted by name."""

    def reserve_version(self, name: str, upload_key: Callable[[int], str], at: str) -> VersionRecord:
        """Atomically take the next version number and record it PENDING_UPLOAD (one transaction)."""

    def get_version(self, name: str, version: int) -> VersionRecord: ...

    def list_versions(self, name: str) -> list[VersionRecord]:
        """Sorted by version number."""

    def update_version(self, record: VersionRecord, *, expected_status: str | None = None) -> None:
        """Replace a version; Conflict if ``expected_status`` is given and the stored status differs."""

    def set_default_version(self, name: str, version: int) -> ModelRecord:
        """Conflict unless the version is READY (checked in the same transaction)."""

    def delete_version(self, name: str, version: int) -> None:
        """Conflict if it is the default version."""


class DeploymentStore(Protocol):
    def create(self, deployment: Deployment) -> bool:
        """Record a new deployment; False (and no change) if one with this id exists: idempotency."""

    def get(self, deployment_id: str) -> Deployment: ...

    def save(self, deployment: Deployment) -> Deployment:
        """Write with revision+1; Conflict unless the stored revision is ``deployment.revision``."""

    def list_for_model(self, model_name: str) -> list[Deployment]:
        """Newest first."""


class JobStore(Protocol):
    def create(self, job: Job) -> bool:
        """False when a job with this id exists (nothing is written then)."""

    def get(self, job_id: str) -> Job: ...

    def save(self, job: Job) -> Job:
        """Write with revision+1; Conflict unless the stored revision is ``job.revision``."""

    def list_for_account(self, account_id: str, *, limit: int = 50) -> list[Job]:
        """The account's newest ``limit`` jobs, newest first."""


class UsageStore(Protocol):
    """Usage counters per (account, model, UTC day), only ever added to (``core/usage.py``)."""

    def add(self, deltas: Sequence[UsageDay]) -> None:
        """Add each delta's counters and latency buckets to the stored item of its key (created at zero),
        each item atomically, so concurrent writers never lose a count."""

    def query(
        self, account_id: str, first_day: str, last_day: str, *, model: str | None = None
    ) -> list[UsageDay]:
        """The account's items from ``first_day`` to ``last_day`` (inclusive, YYYY-MM-DD), of ``model``
        only when given; sorted by day, then model."""


class AssociationStore(Protocol):
    def put_environment_image(self, image: EnvironmentImage) -> None: ...

    def get_environment_image(self, fingerprint: str) -> EnvironmentImage | None: ...

    def put_model_association(self, association: ModelAssociation) -> None: ...

    def get_model_association(self, model_name: str, version: int) -> ModelAssociation: ...


class PresignedUpload(Frozen):
    """A browser-style POST: send ``fields`` plus the file as form field ``file`` to ``url``."""

    url: str
    fields: dict[str, str]
    key: str
    max_bytes: int
    expires_in: int


class ObjectInfo(Frozen):
    key: str
    size_bytes: int
    etag: str


class ListedObject(ObjectInfo):
    """An object as a listing gives it: with the time it was last written (what ``put`` and ``head`` answer
    stays an ``ObjectInfo``, so theirs compare equal whatever the clock)."""

    last_modified: str
    """ISO-8601 UTC, as the records write it (``core/clock.utc_text``)."""


class ArtifactStore(Protocol):
    def presign_upload(self, key: str, *, max_bytes: int, expires_in: int) -> PresignedUpload: ...

    def put(self, key: str, data: bytes) -> ObjectInfo: ...

    def upload(self, key: str, source: Path) -> ObjectInfo:
        """``put`` from a file, streamed (a wheel may be hundreds of MB)."""

    def head(self, key: str) -> ObjectInfo: ...

    def presign_download(self, key: str, *, expires_in: int) -> str:
        """A URL that GETs the object for ``expires_in`` seconds, with no other credential."""

    def presign_put(self, key: str, *, expires_in: int) -> str:
        """A URL that PUTs the object for ``expires_in`` seconds (a model's function stores its answer)."""

    def download(self, key: str, dest: Path, *, max_bytes: int) -> ObjectInfo:
        """Stream to ``dest``; ``TooLarge`` past ``max_bytes``."""

    def list_objects(self, prefix: str, *, limit: int) -> list[ListedObject]:
        """The first ``limit`` objects whose keys start with ``prefix``, in S3's order (by the keys' UTF-8
        bytes); never more, however many there are, so what a caller pays is bounded (``[]`` below 1)."""


class RegistryLogin(Protocol):
    def auth_config(self) -> dict[str, str]:
        """The credentials a push hands the docker engine (``username``, ``password``, ``serveraddress``)."""


class RepositoryHost(Protocol):
    """A registry whose repositories exist before a push and whose pushes need a login (ECR)."""

    def ensure_repository(self, name: str) -> str:
        """The URI of repository ``name``, created if missing."""

    def authorization(self) -> RegistryLogin: ...


class WheelCache(Protocol):
    """Wheelhouses shared between the machines that build images (an S3 prefix on AWS and in the local stack):
    the deploy worker reads one here first and stores what it had to download, so a builder that cannot
    reach the package index (a container behind a proxy) finds what the host resolved."""

    def fetch(self, key: str, dest: Path) -> bool:
        """Copy wheelhouse ``key`` (its wheels and ``wheelhouse.json``) into the empty directory ``dest``;
        False when the cache does not hold a complete one."""

    def store(self, key: str, source: Path) -> None:
        """Keep the complete wheelhouse in ``source`` as ``key`` (its index last, so a reader never sees half
        of one); idempotent."""


class JobQueue(Protocol):
    """Where a submitted job waits for the runner (an SQS queue whose handler is ``JobService``'s), and a
    webhook its next attempt (``webhook_attempt``, ``delay_s`` later: SQS delays up to 900 s)."""

    def send(self, job_id: str, *, webhook_attempt: int = 0, delay_s: int = 0) -> None: ...


class Outbox(Protocol):
    """Where message-driven invocations answer: a completion to the ``reply_to`` a message named (an SQS
    queue or an EventBridge bus), a message that cannot be processed to the dead-letter queue."""

    def reply(self, target: str, detail_type: str, detail: dict[str, Any]) -> None: ...

    def dead_letter(self, message_id: str, body: str, reason: str) -> None: ...


class RetryQueue(Protocol):
    """When a message an SQS handler could not finish comes back: sooner than the queue's visibility timeout
    (an hour for the deploy queue, six times the worker's), so an outage costs a minute, not an hour."""

    def retry_in(self, queue_arn: str, receipt_handle: str, seconds: int) -> None: ...


class ImageBuilder(Protocol):
    def build(
        self, manifest: ModelConfigFile, bundle_dir: Path, progress: Progress
    ) -> ContainerAssociation: ...


class FunctionManager(Protocol):
    def deploy(self, manifest: ModelConfigFile, progress: Progress) -> DeployedFunctions:
        """Create or update the model's function(s) from its image and publish a version of each."""

    def promote(self, deployment: DeployedFunctions) -> None:
        """Point the functions' ``live`` alias at this deployment's versions (a new default version)."""

    def retire(self, deployment: DeployedFunctions) -> None:
        """Delete what only this deployment runs on (a deleted version's function versions and state
        machine); idempotent."""


class FunctionInvoker(Protocol):
    def invoke(self, deployment: DeployedFunctions, event: InvocationEvent) -> dict[str, object]:
        """Run one invocation event through a deployed model (fused function or state machine).

        Returns the runtime's response document (a chained one with ``execution``, the state machine's
        billed duration and memory, when the service reports them); raises ``FunctionFailed`` when the
        function crashed
        or could not start and ``FunctionTimedOut`` when it ran out of time.
        """


LOG_TERM = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""What a log search may look for: a trace id or a model name, never a caller's free text."""


def check_log_term(term: str | None) -> str | None:
    """``term`` when a log reader may search for it; ``InvalidRequest`` otherwise."""
    if term is not None and not LOG_TERM.fullmatch(term):
        raise InvalidRequest("a log search term is letters, digits, '-', '_' and '.' only")
    return term


class LogEvent(Frozen):
    """One CloudWatch Logs event: a line a function (or the API) wrote."""

    group: str
    timestamp_ms: int
    message: str


class LogReader(Protocol):
    def read(
        self, group: str, *, since_ms: int, until_ms: int, term: str | None, limit: int
    ) -> list[LogEvent]:
        """The newest ``limit`` events of ``group`` between the times, oldest first; only those holding
        ``term`` (``LOG_TERM``, else ``InvalidRequest``) when given. A group that does not exist has
        none; ``Unavailable`` when the service does not answer or throttles."""


class SecretSource(Protocol):
    def read(self) -> str:
        """The secret's current value. ``ConfigError`` if it does not exist, is empty or may not be read;
        ``Unavailable`` if its service does not answer."""


class Sandbox(Protocol):
    def probe(self, request: ProbeRequest) -> NativeContract:
        """Open an artifact that needs code to open (a pickle, a trusted-type .skops) in isolation and return
        its native contract, validated here; ``UnsafeArtifact`` when no sandbox is configured, an
        ``ArtifactError`` with a fixed message (failure class, error id) when the probe fails."""
