"""Deployments: an uploaded bundle -> a READY model version, as a recorded plan of stages.

RECEIVED -> INSPECTED -> CONFIG_GENERATED -> IMAGE_BUILT -> FUNCTIONS_READY -> READY, or FAILED with a reason
a user can act on. S3 notifications arrive through SQS at least once, so:

* the deployment id is derived from (bucket, key, etag): every delivery of one upload names one deployment,
  and ``DeploymentStore.create`` lets exactly one handler start it;
* a handler owns a deployment while its lease runs (every save extends it); a redelivery finding it leased
  raises ``DeploymentBusy`` so SQS retries later, one finding the lease expired (the handler died) takes it
  over with a revision-checked save and resumes from the first unfinished stage;
* every stage is idempotent and re-creates what it needs (the bundle, its inspection, the manifest) when a
  resumed attempt starts past it, because the previous attempt's temp dir is gone;
* attempts are counted, so a deployment that keeps crashing ends FAILED instead of looping.

How a failed stage ends:

* a transient outage -- a domain error answering 503 (``Unavailable``: a table, the bucket, Lambda did
  not answer, as the adapters translate it; ``EngineUnavailable``: the docker engine did not), an error
  a port let through that the ``outage`` classifier the wiring hands in names one, or ``DeploymentBusy``
  -- is recorded on the deployment and re-raised, so SQS redelivers and the next attempt resumes; after
  ``max_attempts`` it ends FAILED;
* any other domain error (``ModelportError``) ends the deployment FAILED at once with its one-line
  message, and the version with it;
* anything else (``RecursionError``, ``TypeError``, ``OSError``, ``MemoryError``...) is a bug or a
  hostile input no check caught: retrying replays it, so it ends FAILED at once with a generic message
  and an error id; the id is logged with the traceback, and the exception's text never reaches ``reason``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from chalicelib.core.clock import parse_utc, utc_text
from chalicelib.core.config import CONFIG_FILE
from chalicelib.core.config_file import ModelConfigFile, Tolerance
from chalicelib.core.errors import ConfigError, Conflict, ModelportError, NotFound, TooLarge, Unavailable
from chalicelib.core.pipeline import stage_environments, with_plan
from chalicelib.core.ports import (
    ArtifactStore,
    AssociationStore,
    Clock,
    DeploymentStore,
    FunctionManager,
    ImageBuilder,
    ModelStore,
    Sandbox,
)
from chalicelib.core.records import (
    DEPLOYMENT_STAGES,
    Deployment,
    DeploymentStage,
    ModelAssociation,
    StageRecord,
    VersionRecord,
)
from chalicelib.services.bundles import BundleLimits, extract_bundle
from chalicelib.services.events import s3_records
from chalicelib.services.intake import Inspected, config_file_for_dir, inspect_dir, restore_converted

log = logging.getLogger(__name__)

Outage = Callable[[BaseException], Unavailable | None]
"""An exception as ``Unavailable`` when it says a backend did not answer, else None (a bug)."""

UPLOAD_KEY = re.compile(
    r"^uploads/(?P<name>[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?)/v(?P<version>\d{10})/bundle\.(?:tar\.gz|zip)$"
)
TERMINAL = ("READY", "FAILED")
_DOING: dict[str, str] = {
    "RECEIVED": "receiving the bundle",
    "INSPECTED": "inspecting the bundle",
    "CONFIG_GENERATED": "generating the config file",
    "IMAGE_BUILT": "building the image",
    "FUNCTIONS_READY": "deploying the functions",
    "READY": "publishing the version",
}


def upload_key(name: str, version: int, fmt: str = "tar.gz") -> str:
    """Where the bundle of one version is uploaded; the deployment handler reads name and version back."""
    return f"uploads/{name}/v{version:010d}/bundle.{fmt}"


def parse_upload_key(key: str) -> tuple[str, int] | None:
    """(model name, version) of a bundle key; None for any other object, which is ignored."""
    match = UPLOAD_KEY.match(key)
    if match is None or int(match["version"]) < 1:
        return None
    return match["name"], int(match["version"])


def deployment_id(bucket: str, key: str, etag: str) -> str:
    return hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()[:32]


class DeploymentBusy(Exception):
    """Another handler holds the deployment; not a ``ModelportError``, so the SQS message is retried."""


def mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


class _Attempt:
    """What one handler invocation knows of a deployment; rebuilt lazily when a resumed attempt needs it."""

    def __init__(self, service: DeploymentService, dep: Deployment, workdir: Path, etag: str, size: int):
        self.service = service
        self.dep = dep
        self.workdir = workdir
        self.etag = etag.strip('"')
        self.size = size
        self._root: Path | None = None
        self._inspected: Inspected | None = None
        self._manifest: ModelConfigFile | None = None

    @property
    def key(self) -> str:
        return self.dep.source.split("/", 3)[3]

    def scrub(self, text: str) -> str:
        """Messages name temp paths; a user only knows paths inside the bundle."""
        if self._root is not None:
            text = text.replace(f"{self._root}/", "").replace(str(self._root), "the bundle")
        return text.replace(f"{self.workdir}/", "").replace(str(self.workdir), "the bundle")

    def bundle_root(self) -> Path:
        """Download and extract the bundle (once per attempt); its root is where ``modelport.yaml`` is."""
        if self._root is None:
            limit = self.service.max_bundle_bytes
            if self.size > limit:
                raise TooLarge(f"bundle is {mb(self.size)}, over the {mb(limit)} limit")
            archive = self.workdir / "bundle"
            artifacts = self.service.artifacts
            try:
                info = artifacts.download(self.key, archive, max_bytes=limit)
            except TooLarge:
                size = artifacts.head(self.key).size_bytes
                raise TooLarge(f"bundle is {mb(size)}, over the {mb(limit)} limit") from None
            except NotFound:
                raise NotFound(f"the bundle {self.dep.source} is gone; upload it again") from None
            if self.etag and info.etag.strip('"') != self.etag:
                raise Conflict(
                    f"the bundle {self.dep.source} was replaced after this upload",
                    hint="request a new version for a new bundle",
                )
            extracted = Path(tempfile.mkdtemp(prefix="model-", dir=self.workdir))
            extract_bundle(archive, extracted, self.service.limits)
            archive.unlink()
            self._root = _model_root(extracted)
        return self._root

    def inspected(self) -> Inspected:
        """The bundle's config and native contract (detected and inspected once per attempt)."""
        if self._inspected is None:
            inspected = inspect_dir(self.bundle_root(), self.service.sandbox)
            config, name = inspected.config, self.dep.model_name
            if config.name != name:
                raise ConfigError(
                    f"{CONFIG_FILE} names the model {config.name!r} but the bundle was uploaded as {name!r}",
                    hint=f"set 'name: {name}' or upload to /v1/models/{config.name}/versions",
                )
            self._inspected = inspected
        return self._inspected

    def manifest(self) -> ModelConfigFile:
        """The version's model config file: as generated in this attempt, else as the version stored it
        (one stored before plans were recorded gets its plan here, as intake would have made it)."""
        if self._manifest is None:
            stored = self.service.version(self.dep).manifest
            if stored is None:
                raise ConfigError(f"version {self.dep.version} of {self.dep.model_name!r} has no config file")
            manifest = ModelConfigFile.model_validate_json(stored)
            if manifest.pipeline_plan is None:
                manifest = with_plan(manifest, shared_stages=self.service.shared_stages)
            self._manifest = manifest
        return self._manifest

    def store_manifest(self, manifest: ModelConfigFile) -> None:
        self._manifest = manifest
        version = self.service.own_version(self.dep, "DEPLOYING")
        self.service.models.update_version(
            version.model_copy(update={"manifest": manifest.to_json()}), expected_status="DEPLOYING"
        )

    def progress(self, line: str) -> None:
        log.info("deployment %s: %s", self.dep.deployment_id, line)


def _transient(err: ModelportError) -> bool:
    """A 503 (``Unavailable``, the docker engine not answering) says "try again": nothing to fix."""
    return err.http_status == 503


def _no_outage(exc: BaseException) -> Unavailable | None:
    return None


def _model_root(extracted: Path) -> Path:
    """The bundle's top level, or its only directory when the bundle was made from a folder (tar c dir/)."""
    if (extracted / CONFIG_FILE).exists():
        return extracted
    dirs = [
        d
        for d in extracted.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX" and (d / CONFIG_FILE).is_file()
    ]
    return dirs[0] if len(dirs) == 1 else extracted


class DeploymentService:
    """The deployment plan over explicit ports: the stores it records in, the builders it drives."""

    def __init__(
        self,
        *,
        models: ModelStore,
        deployments: DeploymentStore,
        artifacts: ArtifactStore,
        images: ImageBuilder,
        functions: FunctionManager,
        associations: AssociationStore,
        sandbox: Sandbox,
        clock: Clock,
        bundle_bucket: str,
        max_bundle_bytes: int,
        shared_stages: bool = False,
        outage: Outage = _no_outage,
        lease_s: int = 900,
        max_attempts: int = 3,
        limits: BundleLimits | None = None,
        scratch: Path | None = None,
        conversion_tolerance: Tolerance | None = None,
    ) -> None:
        """``outage`` names the errors a port let through untranslated that say a backend did not answer
        (the adapters raise ``Unavailable`` themselves; this is the net under them). ``lease_s`` must
        outlast the longest stage (a build) so a live handler is never taken over. ``conversion_tolerance``:
        how close a ``runtime: onnx`` model must answer to its estimator (default ``Tolerance()``)."""
        self.models = models
        self.deployments = deployments
        self.artifacts = artifacts
        self.images = images
        self.functions = functions
        self.associations = associations
        self.sandbox = sandbox
        self.clock = clock
        self.bundle_bucket = bundle_bucket
        self.max_bundle_bytes = max_bundle_bytes
        self.outage = outage
        self.shared_stages = shared_stages
        """The platform has shared stage functions: ``pipeline: auto`` may chain on them."""
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.limits = limits or BundleLimits()
        self.scratch = scratch
        self.conversion_tolerance = conversion_tolerance
        self._stages: dict[DeploymentStage, Callable[[_Attempt], None]] = {
            "INSPECTED": self._inspect,
            "CONFIG_GENERATED": self._generate_config,
            "IMAGE_BUILT": self._build_image,
            "FUNCTIONS_READY": self._deploy_functions,
            "READY": self._ready,
        }

    # ------------------------------------------------------------------ queries

    def get(self, deployment_id: str) -> Deployment:
        return self.deployments.get(deployment_id)

    def for_model(self, name: str) -> list[Deployment]:
        return self.deployments.list_for_model(name)

    # ------------------------------------------------------------------ events

    def handle_message(self, sqs_body: str) -> list[Deployment]:
        """Every bundle upload an SQS message body announces, deployed in order."""
        handled = (self.handle_s3_object(*record) for record in s3_records(sqs_body))
        return [d for d in handled if d is not None]

    def handle_s3_object(self, bucket: str, key: str, etag: str, size: int) -> Deployment | None:
        """Deploy one uploaded bundle; None for objects that are not bundles, the stored one for repeats."""
        parsed = parse_upload_key(key)
        if parsed is None:
            log.info("ignoring s3://%s/%s: not a bundle upload key", bucket, key)
            return None
        if bucket != self.bundle_bucket:
            log.info("ignoring s3://%s/%s: not the bundle bucket", bucket, key)
            return None
        name, version = parsed
        now = self.clock()
        fresh = Deployment(
            deployment_id=deployment_id(bucket, key, etag),
            model_name=name,
            version=version,
            source=f"s3://{bucket}/{key}",
            state="RECEIVED",
            stages=(StageRecord(stage="RECEIVED", started_at=now, finished_at=now),),
            attempts=1,
            lease_until=self._lease_end(now),
            created_at=now,
            updated_at=now,
        )
        if self.deployments.create(fresh):
            dep = fresh
        else:
            claimed = self._take_over(fresh.deployment_id)
            if claimed.state in TERMINAL:
                return claimed
            dep = claimed
        return self._run(dep, etag, size)

    def give_up(self, sqs_body: str) -> list[Deployment]:
        """For messages the queue moved to its DLQ: whatever they started ends FAILED, never stuck."""
        ended = []
        for bucket, key, etag, _size in s3_records(sqs_body):
            try:
                dep = self.deployments.get(deployment_id(bucket, key, etag))
            except NotFound:
                continue
            if dep.state not in TERMINAL:
                reason = f"deployment gave up after repeated failed deliveries (last stage: {dep.state})"
                ended.append(self._fail(dep, reason + (f"; {dep.reason}" if dep.reason else "")))
        return ended

    # ------------------------------------------------------------------ ownership

    def _take_over(self, dep_id: str) -> Deployment:
        """The existing deployment: terminal as is, else claimed for this handler (or DeploymentBusy)."""
        current = self.deployments.get(dep_id)
        if current.state in TERMINAL:
            return current
        now = self.clock()
        if current.lease_until is not None and parse_utc(now) < parse_utc(current.lease_until):
            raise DeploymentBusy(
                f"deployment {dep_id} is held by another handler until {current.lease_until}"
            )
        dep = self._save(current, attempts=current.attempts + 1)
        log.warning("deployment %s: attempt %d resumes after %s", dep_id, dep.attempts, dep.state)
        version = self._version_or_none(dep)
        if version is not None and version.deployment_id == dep_id and version.status == "FAILED":
            return self._save(dep, state="FAILED", reason=version.reason, lease_until=None)
        if dep.attempts > self.max_attempts:
            reason = f"deployment did not finish after {self.max_attempts} attempts (last stage: {dep.state})"
            return self._fail(dep, reason + (f"; {dep.reason}" if dep.reason else ""))
        return dep

    def _lease_end(self, now: str) -> str:
        return utc_text(parse_utc(now) + timedelta(seconds=self.lease_s))

    def _save(self, dep: Deployment, **changes: Any) -> Deployment:
        """A revision-checked write that extends the lease; losing the race means another handler owns it."""
        now = self.clock()
        update: dict[str, Any] = {"updated_at": now, "lease_until": self._lease_end(now), **changes}
        try:
            return self.deployments.save(dep.model_copy(update=update))
        except Conflict:
            raise DeploymentBusy(
                f"deployment {dep.deployment_id} was taken over by another handler"
            ) from None

    def _fail(self, dep: Deployment, reason: str) -> Deployment:
        """Version first: should this handler die in between, the resumed attempt finds it and finishes."""
        version = self._version_or_none(dep)
        if (
            version is not None
            and version.deployment_id == dep.deployment_id
            and version.status == "DEPLOYING"
        ):
            with contextlib.suppress(Conflict, NotFound):
                self.models.update_version(
                    version.model_copy(update={"status": "FAILED", "reason": reason}),
                    expected_status="DEPLOYING",
                )
        log.warning("deployment %s FAILED: %s", dep.deployment_id, reason)
        return self._save(dep, state="FAILED", reason=reason, lease_until=None)

    # ------------------------------------------------------------------ the plan

    def _run(self, dep: Deployment, etag: str, size: int) -> Deployment:
        workdir = Path(tempfile.mkdtemp(prefix="modelport-deploy-", dir=self.scratch))
        attempt = _Attempt(self, dep, workdir, etag, size)
        stage: str = attempt.dep.state
        try:
            for stage in DEPLOYMENT_STAGES[DEPLOYMENT_STAGES.index(attempt.dep.state) + 1 :]:
                started = self.clock()
                try:
                    self._stages[stage](attempt)
                except DeploymentBusy:
                    raise
                except ModelportError as err:
                    if _transient(err):
                        raise
                    return self._fail(attempt.dep, attempt.scrub(str(err)))
                record = StageRecord(stage=stage, started_at=started, finished_at=self.clock())
                terminal = {"lease_until": None, "reason": None} if stage == "READY" else {}
                attempt.dep = self._save(
                    attempt.dep, state=stage, stages=(*attempt.dep.stages, record), **terminal
                )
            return attempt.dep
        except DeploymentBusy:
            raise
        except Exception as exc:
            unavailable = exc if isinstance(exc, ModelportError) and _transient(exc) else self.outage(exc)
            if unavailable is None:
                return self._internal_error(attempt, stage)
            reason = f"attempt {attempt.dep.attempts} failed: {attempt.scrub(str(unavailable))}"
            log.warning("deployment %s: %s", dep.deployment_id, reason, exc_info=True)
            try:  # release the lease so the redelivery can resume at once
                self._save(attempt.dep, reason=reason, lease_until=None)
            except Exception:
                log.exception("deployment %s: could not record the failed attempt", dep.deployment_id)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _internal_error(self, attempt: _Attempt, stage: str) -> Deployment:
        """Fail now with a message that names only the stage and an id; the traceback goes to the log."""
        error_id = uuid.uuid4().hex[:16]
        doing = _DOING.get(stage, "deploying")
        log.exception("deployment %s: error id %s while %s", attempt.dep.deployment_id, error_id, doing)
        reason = f"internal error while {doing} (error id {error_id}); the operators have been notified"
        return self._fail(attempt.dep, reason)

    def version(self, dep: Deployment) -> VersionRecord:
        try:
            return self.models.get_version(dep.model_name, dep.version)
        except NotFound:
            raise NotFound(
                f"no version {dep.version} of model {dep.model_name!r} was reserved for {dep.source}",
                hint=f"request an upload with POST /v1/models/{dep.model_name}/versions",
            ) from None

    def _version_or_none(self, dep: Deployment) -> VersionRecord | None:
        try:
            return self.models.get_version(dep.model_name, dep.version)
        except NotFound:
            return None

    def own_version(self, dep: Deployment, *statuses: str) -> VersionRecord:
        """The version, provided this deployment is the one deploying it."""
        version = self.version(dep)
        if version.deployment_id not in (None, dep.deployment_id):
            raise Conflict(
                f"version {dep.version} of {dep.model_name!r} is deployed by another upload "
                f"(deployment {version.deployment_id})",
                hint="request a new version for a new bundle",
            )
        if version.status not in statuses:
            raise Conflict(
                f"version {dep.version} of {dep.model_name!r} is {version.status}",
                hint="request a new version for a new bundle",
            )
        return version

    def _inspect(self, attempt: _Attempt) -> None:
        dep = attempt.dep
        version = self.own_version(dep, "PENDING_UPLOAD", "DEPLOYING")
        if version.status == "PENDING_UPLOAD" or version.deployment_id is None:
            self.models.update_version(
                version.model_copy(update={"status": "DEPLOYING", "deployment_id": dep.deployment_id}),
                expected_status=version.status,
            )
        attempt.inspected()

    def _generate_config(self, attempt: _Attempt) -> None:
        """Intake, with the pipeline decided here once: everything after reads the recorded plan."""
        manifest = config_file_for_dir(
            attempt.bundle_root(),
            version=attempt.dep.version,
            shared_stages=self.shared_stages,
            inspected=attempt.inspected(),
            tolerance=self.conversion_tolerance,
        )
        attempt.store_manifest(manifest)

    def _build_image(self, attempt: _Attempt) -> None:
        """The builder records the environment image (it knows its size and digest); this stage records
        the model version's association."""
        # A resumed attempt may find the slots filled by the attempt it replaces; build from the plain file.
        manifest = attempt.manifest().model_copy(update={"container": None, "deployment": None})
        restore_converted(attempt.bundle_root(), manifest)  # a resumed attempt has the bundle, not the graph
        built = self.images.build(manifest, attempt.bundle_root(), attempt.progress)
        self.associations.put_model_association(
            ModelAssociation(
                model_name=manifest.name,
                version=manifest.version,
                fingerprint=stage_environments(manifest)[0].fingerprint,  # what its image is built on
                image_uri=built.image_uri,
                image_digest=built.image_digest,
                size_bytes=built.size_bytes,
                created_at=self.clock(),
            )
        )
        attempt.store_manifest(manifest.model_copy(update={"container": built}))

    def _deploy_functions(self, attempt: _Attempt) -> None:
        manifest = attempt.manifest().model_copy(update={"deployment": None})
        deployed = self.functions.deploy(manifest, attempt.progress)
        association = self.associations.get_model_association(manifest.name, manifest.version)
        self.associations.put_model_association(
            association.model_copy(
                update={
                    "functions": tuple(f.function_name for f in deployed.functions),
                    "state_machine_arn": deployed.state_machine_arn,
                }
            )
        )
        attempt.store_manifest(manifest.model_copy(update={"deployment": deployed}))

    def _ready(self, attempt: _Attempt) -> None:
        dep = attempt.dep
        version = self.own_version(dep, "DEPLOYING", "READY")
        first = self.models.get_model(dep.model_name).default_version is None
        deployed = attempt.manifest().deployment
        if first and deployed is not None:  # the first ready version goes live: its aliases before a
            self.functions.promote(deployed)  # client sees READY and calls the functions by them
        if version.status == "DEPLOYING":
            self.models.update_version(
                version.model_copy(update={"status": "READY", "reason": None}), expected_status="DEPLOYING"
            )
        if first:
            self.models.set_default_version(dep.model_name, dep.version)
