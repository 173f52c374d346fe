"""``modelport aws package|deploy|destroy``: the API package and the stack's template, then CloudFormation.

Deploying goes through change sets, so every change is reviewed by CloudFormation before it runs, and is
printed as it happens. A new stack goes up in two steps: first our resources without the worker (the ECR
repository must exist before the worker's image can be pushed to it), then everything, the worker included.
The data buckets are retained when the stack is deleted unless ``delete_data`` is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from chalicelib.aws.template import artifact_bucket, merge, stack_name, stack_template
from chalicelib.core.errors import ConfigError, ModelportError, Unavailable
from chalicelib.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MAX_API_ZIP_BYTES = 50 * 1024 * 1024
"""Lambda's limit for a zip uploaded directly; the API's package stays far below it (slim requirements)."""
PACKAGE_TIMEOUT_S = 180
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
_FAILED = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "UPDATE_ROLLBACK_FAILED", "CREATE_FAILED")
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")

Progress = Callable[[str], None]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Package:
    """What ``package`` wrote: the merged template, the API zip, and how long and big it was."""

    template: Path
    sam: Path
    zip_path: Path
    zip_bytes: int
    seconds: float


@dataclass(frozen=True)
class Deployed:
    stack: str
    outputs: dict[str, str] = field(default_factory=dict)


def stage_settings(stage: str, config: Path | None = None) -> Settings:
    """The stage's settings as its functions will read them (``.chalice/config.json``, then the
    authorizer's own variables, where the admin key secret is named); start-up checks included."""
    path = config or ROOT / ".chalice" / "config.json"
    stages = json.loads(path.read_text())["stages"]
    if stage not in stages:
        raise ConfigError(
            f"no stage {stage[:40]!r} in {path.name}", hint="one of " + ", ".join(sorted(stages))
        )
    if stage == "local":
        raise ConfigError("stage 'local' runs on this machine (modelport up), not on AWS")
    env: dict[str, str] = dict(stages[stage].get("environment_variables", {}))
    for function in stages[stage].get("lambda_functions", {}).values():
        env.update(function.get("environment_variables", {}))
    env["MODELPORT_STAGE"] = stage
    env.setdefault(
        "AWS_REGION", os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    )
    return Settings.from_env(env)


def package(
    stage: str,
    out_dir: Path,
    *,
    run: Callable[..., Any] = subprocess.run,
    clock: Callable[[], float] = time.monotonic,
) -> Package:
    """Run ``chalice package`` for the stage into OUT_DIR/chalice and write OUT_DIR/template.json (ours merged
    into Chalice's). Offline apart from wheel downloads."""
    settings = stage_settings(stage)
    out_dir.mkdir(parents=True, exist_ok=True)
    chalice_dir = out_dir / "chalice"
    if chalice_dir.exists():
        shutil.rmtree(chalice_dir)
    chalice = Path(sys.executable).parent / "chalice"
    command = [str(chalice if chalice.exists() else shutil.which("chalice") or "chalice")]
    env = {**os.environ, "AWS_DEFAULT_REGION": settings.region}
    started = clock()
    try:
        result = run(
            [*command, "package", "--stage", stage, str(chalice_dir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=PACKAGE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(f"chalice package took more than {PACKAGE_TIMEOUT_S} s") from None
    seconds = clock() - started
    if result.returncode != 0:
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-5:]
        raise ConfigError("chalice package failed: " + " | ".join(tail)[:800])
    zip_path = chalice_dir / "deployment.zip"
    size = zip_path.stat().st_size
    if size > MAX_API_ZIP_BYTES:
        raise ConfigError(
            f"the API package is {size / 2**20:.1f} MB, over Lambda's {MAX_API_ZIP_BYTES // 2**20} MB",
            hint="keep requirements.txt slim: model libraries belong in requirements-worker.txt",
        )
    sam = json.loads((chalice_dir / "sam.json").read_text())
    template = out_dir / "template.json"
    merged = merge(sam, settings, code_uri="./chalice/deployment.zip")
    template.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    (out_dir / "stack.json").write_text(json.dumps(stack_template(settings), indent=2, sort_keys=True) + "\n")
    return Package(
        template=template, sam=chalice_dir / "sam.json", zip_path=zip_path, zip_bytes=size, seconds=seconds
    )


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _session(settings: Settings, session: Any | None) -> Any:
    if session is not None:
        return session
    import boto3

    return boto3.session.Session(region_name=settings.region)


def _account(session: Any, settings: Settings) -> str:
    """Who we are, asked first, so missing credentials are one clear line rather than a failed change set."""
    try:
        identity = session.client("sts", region_name=settings.region).get_caller_identity()
    except NoCredentialsError:
        raise ConfigError(
            "no AWS credentials", hint="configure them (aws configure, AWS_PROFILE or AWS_ACCESS_KEY_ID)"
        ) from None
    except NoRegionError:
        raise ConfigError("no AWS region", hint="set AWS_REGION") from None
    except ClientError as err:
        raise ConfigError(f"AWS refused the credentials: {_code(err)}") from None
    except BotoCoreError as err:
        raise Unavailable(f"AWS cannot be reached: {err}") from None
    return str(identity["Account"])


class Stack:
    """One CloudFormation stack, driven through change sets; events printed as they come."""

    def __init__(
        self, cfn: Any, name: str, progress: Progress, *, sleep: Sleep = time.sleep, poll_s: float = 5.0
    ):
        self.cfn = cfn
        self.name = name
        self.progress = progress
        self.sleep = sleep
        self.poll_s = poll_s
        self._seen: set[str] = set()

    def status(self) -> str | None:
        try:
            stacks = self.cfn.describe_stacks(StackName=self.name)["Stacks"]
        except ClientError as err:
            if _code(err) == "ValidationError" and "does not exist" in str(err):
                return None
            raise
        return str(stacks[0]["StackStatus"]) if stacks else None

    def check_deployable(self) -> str | None:
        status = self.status()
        if status in _FAILED:
            raise ConfigError(
                f"stack {self.name} is in state {status}: CloudFormation cannot update it",
                hint="look at its events, then `modelport aws destroy` (or continue the rollback) first",
            )
        if status is not None and status.endswith("_IN_PROGRESS"):
            raise ConfigError(f"stack {self.name} is busy ({status})", hint="wait until it settles")
        return status

    def apply(self, template: Mapping[str, Any], parameters: Mapping[str, str], *, create: bool) -> bool:
        """Create and execute one change set; False when there was nothing to change."""
        change_set = f"modelport-{int(time.time())}"
        self.cfn.create_change_set(
            StackName=self.name,
            ChangeSetName=change_set,
            ChangeSetType="CREATE" if create else "UPDATE",
            TemplateBody=json.dumps(template, sort_keys=True),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())],
            Capabilities=CAPABILITIES,
            Tags=[{"Key": "modelport", "Value": self.name}],
        )
        while True:
            described = self.cfn.describe_change_set(StackName=self.name, ChangeSetName=change_set)
            status = described["Status"]
            if status in ("CREATE_COMPLETE", "FAILED"):
                break
            self.sleep(self.poll_s)
        if status == "FAILED":
            reason = str(described.get("StatusReason", ""))
            if any(text in reason for text in _NO_CHANGES):
                self.cfn.delete_change_set(StackName=self.name, ChangeSetName=change_set)
                self.progress(f"{self.name}: no changes")
                return False
            raise ConfigError(f"CloudFormation refused the change set: {reason[:600]}")
        for change in described.get("Changes", []):
            rc = change.get("ResourceChange", {})
            self.progress(
                f"  {rc.get('Action', '?'):<8} {rc.get('LogicalResourceId')} ({rc.get('ResourceType')})"
            )
        self.cfn.execute_change_set(StackName=self.name, ChangeSetName=change_set)
        final = self.wait()
        if not final.endswith("_COMPLETE") or "ROLLBACK" in final:
            raise ConfigError(
                f"stack {self.name} ended {final}", hint="the events above say which resource failed"
            )
        return True

    def wait(self) -> str:
        """Print new stack events until the stack settles; the final status (``DELETE_COMPLETE`` if gone)."""
        while True:
            self._events()
            status = self.status()
            if status is None:
                return "DELETE_COMPLETE"
            if not status.endswith("_IN_PROGRESS"):
                return status
            self.sleep(self.poll_s)

    def _events(self) -> None:
        try:
            events = self.cfn.describe_stack_events(StackName=self.name)["StackEvents"]
        except ClientError:
            return
        for event in reversed(events):  # oldest first
            if event["EventId"] in self._seen:
                continue
            self._seen.add(event["EventId"])
            reason = f" {event['ResourceStatusReason']}" if event.get("ResourceStatusReason") else ""
            self.progress(f"  {event['ResourceStatus']:<20} {event['LogicalResourceId']}{reason[:300]}")

    def outputs(self) -> dict[str, str]:
        stack = self.cfn.describe_stacks(StackName=self.name)["Stacks"][0]
        return {str(o["OutputKey"]): str(o["OutputValue"]) for o in stack.get("Outputs", [])}


WorkerImage = Callable[[Settings, Any, str, Progress], str]
"""(settings, session, registry host, progress) -> the worker image's ``REGISTRY/REPO@sha256:...``; the CLI
passes the daemonless builder's recipe (``chalicelib.worker.image``), which this adapter may not import."""


def deploy(
    stage: str,
    progress: Progress,
    *,
    session: Any | None = None,
    worker_image: WorkerImage,
    packaged: Package | None = None,
    sleep: Sleep = time.sleep,
    poll_s: float = 5.0,
) -> Deployed:
    """Package, make sure the stack's repository exists, push the worker image, then update the stack."""
    settings = stage_settings(stage)
    session = _session(settings, session)
    account = _account(session, settings)
    cfn = session.client("cloudformation", region_name=settings.region)
    stack = Stack(cfn, stack_name(stage), progress, sleep=sleep, poll_s=poll_s)
    try:
        status = stack.check_deployable()
        with tempfile.TemporaryDirectory(prefix="modelport-aws-") as scratch:
            pkg = packaged or package(stage, Path(scratch))
            progress(f"API package: {pkg.zip_bytes / 2**20:.1f} MB")
            if status is None:
                progress(f"creating {stack.name} (without the worker: its repository comes first)")
                stack.apply(stack_template(settings), {"WorkerImageUri": ""}, create=True)
            code = _upload(session, settings, pkg.zip_path)
            registry = f"{account}.dkr.ecr.{settings.region}.amazonaws.com"
            progress(f"building the deploy worker's image for {registry}")
            image = worker_image(settings, session, registry, progress)
            progress(f"worker image: {image}")
            sam = json.loads(pkg.sam.read_text())
            stack.apply(merge(sam, settings, code_uri=code), {"WorkerImageUri": image}, create=False)
        return Deployed(stack=stack.name, outputs=stack.outputs())
    except ClientError as err:
        raise _translated(err) from None
    except BotoCoreError as err:
        raise Unavailable(f"AWS cannot be reached: {err}") from None


def _upload(session: Any, settings: Settings, zip_path: Path) -> dict[str, str]:
    """Put the API zip in the artifact bucket under its digest (an unchanged package changes nothing)."""
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    bucket, key = artifact_bucket(settings), f"api/{digest}.zip"
    s3 = session.client("s3", region_name=settings.region)
    s3.upload_file(str(zip_path), bucket, key)
    return {"Bucket": bucket, "Key": key}


def _translated(err: ClientError) -> ModelportError:
    code = _code(err)
    message = str(err.response.get("Error", {}).get("Message", ""))[:400]
    if code in (
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
    ):
        return ConfigError(
            f"AWS refused: {code}: {message}", hint="the credentials need rights to deploy the stack"
        )
    if code.startswith("Throttling"):
        return Unavailable(f"AWS is throttling: {message}", hint="try again in a moment")
    return ConfigError(f"AWS: {code}: {message}")


def destroy(
    stage: str,
    progress: Progress,
    *,
    delete_data: bool = False,
    session: Any | None = None,
    sleep: Sleep = time.sleep,
    poll_s: float = 5.0,
) -> list[str]:
    """Delete the stack; the buckets stay (their names returned) unless ``delete_data``."""
    settings = stage_settings(stage)
    session = _session(settings, session)
    _account(session, settings)
    stack = Stack(
        session.client("cloudformation", region_name=settings.region),
        stack_name(stage),
        progress,
        sleep=sleep,
        poll_s=poll_s,
    )
    buckets = [settings.bundle_bucket, settings.data_bucket, artifact_bucket(settings)]
    try:
        status = stack.status()
        if status is None:
            progress(f"{stack.name} does not exist")
        else:
            stack.cfn.delete_stack(StackName=stack.name)
            final = stack.wait()
            if final != "DELETE_COMPLETE":
                raise ConfigError(
                    f"stack {stack.name} ended {final}", hint="the events above say what stayed"
                )
        if not delete_data:
            return buckets
        s3 = session.client("s3", region_name=settings.region)
        for bucket in buckets:
            _delete_bucket(s3, bucket, progress)
        return []
    except ClientError as err:
        raise _translated(err) from None
    except BotoCoreError as err:
        raise Unavailable(f"AWS cannot be reached: {err}") from None


def _delete_bucket(s3: Any, bucket: str, progress: Progress) -> None:
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            keys = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
        progress(f"deleted bucket {bucket}")
    except ClientError as err:
        if _code(err) != "NoSuchBucket":
            raise
