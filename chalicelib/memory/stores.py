"""In-memory twins of the ports: dicts behind one lock per store.

They honour the same contract as the DynamoDB and S3 adapters (the contract suite runs against both), so
a service tested against a twin behaves the same on AWS. The lock makes every method atomic, which is what
DynamoDB's conditional writes and transactions give the adapters.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from chalicelib.core.clock import utc_now
from chalicelib.core.config_file import (
    ContainerAssociation,
    DeployedFunction,
    DeployedFunctions,
    ModelConfigFile,
)
from chalicelib.core.errors import Conflict, FunctionFailed, NotFound, TooLarge
from chalicelib.core.keys import check_key, check_prefix
from chalicelib.core.ports import (
    AssociationStore,
    Clock,
    ListedObject,
    ObjectInfo,
    PresignedUpload,
    Progress,
)
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
from chalicelib.core.replies import MAX_REASON, check_target
from chalicelib.core.usage import UsageDay
from chalicelib.core.wire import InvocationEvent

T = TypeVar("T")


class MemoryAccountStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self._keys: dict[str, ApiKey] = {}
        self._grants: dict[tuple[str, str], Grant] = {}
        self._webhook_secrets: dict[str, str] = {}

    def put_account(self, account: Account) -> None:
        with self._lock:
            if account.account_id in self._accounts:
                raise Conflict(f"account {account.account_id} exists already")
            self._accounts[account.account_id] = account

    def get_account(self, account_id: str) -> Account:
        with self._lock:
            return _found(self._accounts.get(account_id), f"account {account_id}")

    def list_accounts(self) -> list[Account]:
        with self._lock:
            return sorted(self._accounts.values(), key=lambda a: a.account_id)

    def webhook_secret(self, account_id: str, candidate: str) -> str:
        with self._lock:
            return self._webhook_secrets.setdefault(account_id, candidate)

    def put_key(self, key: ApiKey) -> None:
        with self._lock:
            if key.key_id in self._keys:
                raise Conflict(f"API key {key.key_id} exists already")
            self._keys[key.key_id] = key

    def get_key(self, key_id: str) -> ApiKey:
        with self._lock:
            return _found(self._keys.get(key_id), f"API key {key_id}")

    def list_keys(self, account_id: str) -> list[ApiKey]:
        with self._lock:
            return sorted(
                (k for k in self._keys.values() if k.account_id == account_id), key=lambda k: k.key_id
            )

    def revoke_key(self, key_id: str, at: str) -> ApiKey:
        """Idempotent: a key revoked twice keeps its first revocation time."""
        with self._lock:
            key = _found(self._keys.get(key_id), f"API key {key_id}")
            if key.revoked_at is None:
                key = self._keys[key_id] = key.model_copy(update={"revoked_at": at})
            return key

    def put_grant(self, grant: Grant) -> None:
        with self._lock:
            self._grants.setdefault((grant.model_name, grant.grantee), grant)

    def delete_grant(self, model_name: str, grantee: str) -> None:
        with self._lock:
            if self._grants.pop((model_name, grantee), None) is None:
                raise NotFound(f"no grant of {model_name} to {grantee}")

    def list_grants(self, model_name: str) -> list[Grant]:
        with self._lock:
            return sorted(
                (g for (m, _), g in self._grants.items() if m == model_name), key=lambda g: g.grantee
            )

    def granted_models(self, grantee: str) -> list[str]:
        with self._lock:
            return sorted(m for m, g in self._grants if g == grantee)

    def has_grant(self, model_name: str, grantee: str) -> bool:
        with self._lock:
            return (model_name, grantee) in self._grants


class MemoryModelStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelRecord] = {}
        self._versions: dict[tuple[str, int], VersionRecord] = {}

    def create_model(self, model: ModelRecord) -> None:
        with self._lock:
            if model.name in self._models:
                raise Conflict(f"model {model.name} exists already")
            self._models[model.name] = model

    def get_model(self, name: str) -> ModelRecord:
        with self._lock:
            return _found(self._models.get(name), f"model {name}")

    def list_models(self, owner: str) -> list[ModelRecord]:
        with self._lock:
            return sorted((m for m in self._models.values() if m.owner == owner), key=lambda m: m.name)

    def reserve_version(self, name: str, upload_key: Callable[[int], str], at: str) -> VersionRecord:
        with self._lock:
            model = _found(self._models.get(name), f"model {name}")
            number = model.latest_version + 1
            record = VersionRecord(
                name=name,
                version=number,
                status="PENDING_UPLOAD",
                created_at=at,
                upload_key=upload_key(number),
            )
            self._models[name] = model.model_copy(update={"latest_version": number})
            self._versions[(name, number)] = record
            return record

    def get_version(self, name: str, version: int) -> VersionRecord:
        with self._lock:
            return _found(self._versions.get((name, version)), f"version {version} of model {name}")

    def list_versions(self, name: str) -> list[VersionRecord]:
        with self._lock:
            return [v for (n, _), v in sorted(self._versions.items()) if n == name]

    def update_version(self, record: VersionRecord, *, expected_status: str | None = None) -> None:
        with self._lock:
            key = (record.name, record.version)
            stored = _found(self._versions.get(key), f"version {record.version} of model {record.name}")
            if expected_status is not None and stored.status != expected_status:
                raise Conflict(_status_conflict(stored, expected_status))
            self._versions[key] = record

    def set_default_version(self, name: str, version: int) -> ModelRecord:
        with self._lock:
            model = _found(self._models.get(name), f"model {name}")
            stored = _found(self._versions.get((name, version)), f"version {version} of model {name}")
            if stored.status != "READY":
                raise Conflict(_not_ready(stored))
            model = self._models[name] = model.model_copy(update={"default_version": version})
            return model

    def delete_version(self, name: str, version: int) -> None:
        with self._lock:
            model = _found(self._models.get(name), f"model {name}")
            _found(self._versions.get((name, version)), f"version {version} of model {name}")
            if model.default_version == version:
                raise Conflict(_is_default(name, version))
            del self._versions[(name, version)]


class MemoryDeploymentStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deployments: dict[str, Deployment] = {}

    def create(self, deployment: Deployment) -> bool:
        with self._lock:
            if deployment.deployment_id in self._deployments:
                return False
            self._deployments[deployment.deployment_id] = deployment
            return True

    def get(self, deployment_id: str) -> Deployment:
        with self._lock:
            return _found(self._deployments.get(deployment_id), f"deployment {deployment_id}")

    def save(self, deployment: Deployment) -> Deployment:
        with self._lock:
            stored = _found(
                self._deployments.get(deployment.deployment_id), f"deployment {deployment.deployment_id}"
            )
            if stored.revision != deployment.revision:
                raise Conflict(_stale(stored, deployment.revision))
            saved = deployment.model_copy(update={"revision": deployment.revision + 1})
            self._deployments[deployment.deployment_id] = saved
            return saved

    def list_for_model(self, model_name: str) -> list[Deployment]:
        with self._lock:
            found = [d for d in self._deployments.values() if d.model_name == model_name]
            return sorted(found, key=lambda d: (d.created_at, d.deployment_id), reverse=True)


class MemoryJobStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def create(self, job: Job) -> bool:
        with self._lock:
            if job.job_id in self._jobs:
                return False
            self._jobs[job.job_id] = job
            return True

    def get(self, job_id: str) -> Job:
        with self._lock:
            return _found(self._jobs.get(job_id), f"job {job_id}")

    def save(self, job: Job) -> Job:
        with self._lock:
            stored = _found(self._jobs.get(job.job_id), f"job {job.job_id}")
            if stored.revision != job.revision:
                raise Conflict(
                    f"job {job.job_id} was changed concurrently "
                    f"(stored revision {stored.revision}, expected {job.revision})"
                )
            saved = job.model_copy(update={"revision": job.revision + 1})
            self._jobs[job.job_id] = saved
            return saved

    def list_for_account(self, account_id: str, *, limit: int = 50) -> list[Job]:
        with self._lock:
            found = [j for j in self._jobs.values() if j.account_id == account_id]
        return sorted(found, key=lambda j: (j.created_at, j.job_id), reverse=True)[:limit]


class MemoryAssociationStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: dict[str, EnvironmentImage] = {}
        self._models: dict[tuple[str, int], ModelAssociation] = {}

    def put_environment_image(self, image: EnvironmentImage) -> None:
        with self._lock:
            self._images[image.fingerprint] = image

    def get_environment_image(self, fingerprint: str) -> EnvironmentImage | None:
        with self._lock:
            return self._images.get(fingerprint)

    def put_model_association(self, association: ModelAssociation) -> None:
        with self._lock:
            self._models[(association.model_name, association.version)] = association

    def get_model_association(self, model_name: str, version: int) -> ModelAssociation:
        with self._lock:
            found = self._models.get((model_name, version))
            return _found(found, f"association of version {version} of model {model_name}")


class MemoryArtifactStore:
    """Objects as bytes; the etag is the hex MD5 of the bytes, as S3 gives for a single-part upload; each
    object's last write is the ``clock``'s time then (a listing reports it, as S3's LastModified)."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, str] = {}

    def presign_upload(self, key: str, *, max_bytes: int, expires_in: int) -> PresignedUpload:
        check_key(key)
        return PresignedUpload(
            url=f"memory://{key}", fields={"key": key}, key=key, max_bytes=max_bytes, expires_in=expires_in
        )

    def put(self, key: str, data: bytes) -> ObjectInfo:
        check_key(key)
        with self._lock:
            self.objects[key] = bytes(data)
            self.modified[key] = self._clock()
        return _info(key, data)

    def upload(self, key: str, source: Path) -> ObjectInfo:
        return self.put(key, source.read_bytes())

    def presign_download(self, key: str, *, expires_in: int) -> str:
        return f"memory://{check_key(key)}?expires_in={expires_in}"

    def presign_put(self, key: str, *, expires_in: int) -> str:
        return f"memory://{check_key(key)}?put&expires_in={expires_in}"

    def head(self, key: str) -> ObjectInfo:
        check_key(key)
        with self._lock:
            return _info(key, _found(self.objects.get(key), f"object {key}"))

    def download(self, key: str, dest: Path, *, max_bytes: int) -> ObjectInfo:
        check_key(key)
        with self._lock:
            data = _found(self.objects.get(key), f"object {key}")
        if len(data) > max_bytes:
            raise TooLarge(f"object {key} is larger than the limit of {max_bytes} bytes")
        dest.write_bytes(data)
        return _info(key, data)

    def list_objects(self, prefix: str, *, limit: int) -> list[ListedObject]:
        check_prefix(prefix)
        with self._lock:
            keys = sorted((k for k in self.objects if k.startswith(prefix)), key=lambda k: k.encode())
            return [
                ListedObject(**_info(k, self.objects[k]).model_dump(), last_modified=self.modified[k])
                for k in keys[: max(limit, 0)]
            ]


class MemoryImageBuilder:
    """A deterministic stand-in for the container builder: the same manifest always names the same image.

    ``calls`` records every manifest it was asked to build; ``fail_with`` makes every build raise it. Like
    the real builders it records the environment image in ``associations`` (when given). It builds no
    steps images: a platform with this builder has no shared stage functions.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        fail_with: Exception | None = None,
        associations: AssociationStore | None = None,
    ) -> None:
        self.clock = clock
        self.fail_with = fail_with
        self.associations = associations
        self.calls: list[ModelConfigFile] = []
        self._lock = threading.Lock()

    def build(self, manifest: ModelConfigFile, bundle_dir: Path, progress: Progress) -> ContainerAssociation:
        with self._lock:
            self.calls.append(manifest)
        fingerprint = manifest.environment.fingerprint.removeprefix("sha256:")
        progress(f"{self.clock()} building environment image for {fingerprint[:12]}")
        if self.fail_with is not None:
            raise self.fail_with
        digest = hashlib.sha256((manifest.artifact.digest + manifest.environment.fingerprint).encode())
        association = ContainerAssociation(
            environment_image=f"memory/env:{fingerprint[:12]}",
            image_uri=f"memory/{manifest.name}:v{manifest.version}",
            image_digest="sha256:" + digest.hexdigest(),
            size_bytes=sum(f.size_bytes for f in manifest.artifact.files),
        )
        fingerprint = manifest.environment.fingerprint
        if self.associations is not None and self.associations.get_environment_image(fingerprint) is None:
            env_digest = hashlib.sha256(fingerprint.encode()).hexdigest()
            self.associations.put_environment_image(
                EnvironmentImage(
                    fingerprint=fingerprint,
                    image_uri=association.environment_image,
                    image_digest=f"sha256:{env_digest}",
                    size_bytes=0,
                    created_at=self.clock(),
                )
            )
        progress(f"{self.clock()} built {association.image_uri}")
        return association


class MemoryFunctionManager:
    """A stand-in for the Lambda function manager: one fused function per model, named as the real one.

    ``calls`` records every manifest it was asked to deploy and ``promoted`` every deployment promoted;
    ``fail_with`` makes every deploy raise it.
    """

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        self.fail_with = fail_with
        self.calls: list[ModelConfigFile] = []
        self.promoted: list[DeployedFunctions] = []
        self.retired: list[DeployedFunctions] = []
        self._lock = threading.Lock()

    def deploy(self, manifest: ModelConfigFile, progress: Progress) -> DeployedFunctions:
        with self._lock:
            self.calls.append(manifest)
        name = f"modelport-{manifest.name}"
        progress(f"deploying function {name}")
        if self.fail_with is not None:
            raise self.fail_with
        function = DeployedFunction(
            role="fused",
            function_name=name,
            function_arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
            version=str(manifest.version),
        )
        progress(f"function {name} version {manifest.version} is active")
        return DeployedFunctions(mode="fused", functions=(function,))

    def promote(self, deployment: DeployedFunctions) -> None:
        with self._lock:
            self.promoted.append(deployment)

    def retire(self, deployment: DeployedFunctions) -> None:
        with self._lock:
            self.retired.append(deployment)


class MemoryUsageStore:
    """Usage items by (account, model, day); ``adds`` counts the writes (one per delta), as DynamoDB's
    UpdateItem calls would be counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: dict[tuple[str, str, str], UsageDay] = {}
        self.adds = 0

    def add(self, deltas: Sequence[UsageDay]) -> None:
        with self._lock:
            for delta in deltas:
                stored = self._days.get(delta.key)
                self._days[delta.key] = delta if stored is None else stored.plus(delta)
                self.adds += 1

    def query(
        self, account_id: str, first_day: str, last_day: str, *, model: str | None = None
    ) -> list[UsageDay]:
        with self._lock:
            found = [
                d
                for (account, name, day), d in self._days.items()
                if account == account_id and first_day <= day <= last_day and model in (None, name)
            ]
        return sorted(found, key=lambda d: (d.day, d.model))


Handler = Callable[[InvocationEvent], dict[str, object]]


class MemoryInvoker:
    """Runs invocations through handlers registered per function name (tests register the runtime).

    ``calls`` records (function name, event); an unregistered function fails like a function whose
    code cannot start.
    """

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.calls: list[tuple[str, InvocationEvent]] = []
        self._lock = threading.Lock()

    def register(self, function_name: str, handler: Handler) -> None:
        with self._lock:
            self.handlers[function_name] = handler

    def invoke(self, deployment: DeployedFunctions, event: InvocationEvent) -> dict[str, object]:
        name = deployment.functions[0].function_name
        with self._lock:
            self.calls.append((name, event))
            handler = self.handlers.get(name)
        if handler is None:
            raise FunctionFailed(f"function {name} has no code to run")
        return handler(event)


def _found(value: T | None, what: str) -> T:
    if value is None:
        raise NotFound(f"{what} does not exist")
    return value


def _info(key: str, data: bytes) -> ObjectInfo:
    return ObjectInfo(
        key=key, size_bytes=len(data), etag=hashlib.md5(data, usedforsecurity=False).hexdigest()
    )


def _status_conflict(stored: VersionRecord, expected: str) -> str:
    return f"version {stored.version} of model {stored.name} is {stored.status}, not {expected}"


def _not_ready(stored: VersionRecord) -> str:
    return (
        f"version {stored.version} of model {stored.name} is {stored.status}; "
        "only a READY version can be the default"
    )


def _is_default(name: str, version: int) -> str:
    return f"version {version} is the default version of model {name}; set another default first"


def _stale(stored: Deployment, expected: int) -> str:
    return (
        f"deployment {stored.deployment_id} was changed concurrently "
        f"(stored revision {stored.revision}, expected {expected})"
    )


class MemoryRetryQueue:
    """Records each retry delay asked for: (queue ARN, receipt handle, seconds)."""

    def __init__(self) -> None:
        self.retries: list[tuple[str, str, int]] = []

    def retry_in(self, queue_arn: str, receipt_handle: str, seconds: int) -> None:
        self.retries.append((queue_arn, receipt_handle, seconds))


class MemoryJobQueue:
    """The messages sent, in order (as the SQS adapter's bodies), with their delays."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict[str, object], int]] = []

    @property
    def sent(self) -> list[str]:
        """The jobs queued to run (not their webhooks' retries), in order."""
        return [str(doc["job_id"]) for doc, _ in self.messages if "webhook_attempt" not in doc]

    def send(self, job_id: str, *, webhook_attempt: int = 0, delay_s: int = 0) -> None:
        doc: dict[str, object] = {"job_id": job_id}
        if webhook_attempt:
            doc["webhook_attempt"] = webhook_attempt
        self.messages.append((doc, delay_s))


class MemoryOutbox:
    """``Outbox`` as lists: ``replies`` (target, detail type, detail) and ``dead`` (id, body, reason)."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, str, dict[str, Any]]] = []
        self.dead: list[tuple[str, str, str]] = []

    def reply(self, target: str, detail_type: str, detail: dict[str, Any]) -> None:
        self.replies.append((check_target(target), detail_type, detail))

    def dead_letter(self, message_id: str, body: str, reason: str) -> None:
        self.dead.append((message_id, body, reason[:MAX_REASON]))
