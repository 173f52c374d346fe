"""The emulator's records: functions, their published versions and aliases, and the documents the Lambda
API shows for them. Errors are ``LambdaError`` with Lambda's error code and HTTP status.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

LATEST = "$LATEST"
MAX_ASYNC_PAYLOAD = 256 * 1024
LOG_TAIL_BYTES = 4096
RESERVED_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
NAME = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:|\d{12}:function:)?"
    r"(?P<name>[A-Za-z0-9_-]{1,140})(?::(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?"
)
ROLE = re.compile(r"arn:aws[a-zA-Z-]*:iam::\d{12}:role/?[A-Za-z0-9+=,.@_/-]+")


class LambdaError(Exception):
    """A Lambda API error: ``code`` is the ``x-amzn-ErrorType``, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.extra = code, message, status, extra

    def body(self) -> dict[str, str]:
        return {"Type": "User", "message": self.message, **self.extra}


def invalid(message: str) -> LambdaError:
    return LambdaError("InvalidParameterValueException", message)


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@dataclass(frozen=True)
class FunctionConfig:
    """One function version's configuration; published versions are frozen copies of $LATEST."""

    name: str
    image_uri: str
    code_sha256: str
    role: str
    memory_mb: int = 128
    timeout_s: int = 3
    ephemeral_mb: int = 512
    environment: Mapping[str, str] = field(default_factory=dict)
    architectures: tuple[str, ...] = ("x86_64",)
    description: str = ""
    tracing_mode: str = "PassThrough"
    """X-Ray's ``TracingConfig.Mode`` as given (stored and answered; nothing is traced locally)."""
    version: str = LATEST
    revision_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    last_modified: str = field(default_factory=now_text)

    def content(self) -> tuple[Any, ...]:
        """What a published version freezes: equal content means no new version (as on Lambda)."""
        return (
            self.image_uri,
            self.code_sha256,
            self.role,
            self.memory_mb,
            self.timeout_s,
            self.ephemeral_mb,
            tuple(sorted(self.environment.items())),
            self.architectures,
            self.tracing_mode,
        )

    def validated(self) -> FunctionConfig:
        """This configuration, or InvalidParameterValueException for what Lambda refuses."""
        if not 128 <= self.memory_mb <= 10240:
            raise invalid(f"MemorySize {self.memory_mb} is outside 128..10240 MB.")
        if not 1 <= self.timeout_s <= 900:
            raise invalid(f"Timeout {self.timeout_s} is outside 1..900 seconds.")
        if not 512 <= self.ephemeral_mb <= 10240:
            raise invalid(f"EphemeralStorage.Size {self.ephemeral_mb} is outside 512..10240 MB.")
        if len(self.architectures) != 1 or self.architectures[0] not in ("x86_64", "arm64"):
            raise invalid("Architectures must be one of [x86_64] or [arm64].")
        if self.tracing_mode not in ("Active", "PassThrough"):
            raise invalid("TracingConfig.Mode must be one of [Active, PassThrough].")
        reserved = sorted(
            k for k in self.environment if k in RESERVED_VARIABLES or k.startswith("AWS_LAMBDA_")
        )
        if reserved:
            raise invalid(
                "Lambda was unable to configure your environment variables because the environment variables "
                "you have provided contains reserved keys that are currently not supported for modification. "
                f"Reserved keys used in this request: {', '.join(reserved)}"
            )
        return self


@dataclass(frozen=True)
class Alias:
    name: str
    version: str
    description: str = ""
    revision_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Function:
    """A function: $LATEST, its published versions and aliases; ``arn`` is its unqualified ARN."""

    latest: FunctionConfig
    arn: str
    versions: dict[str, FunctionConfig] = field(default_factory=dict)
    aliases: dict[str, Alias] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    next_version: int = 1
    settling: str | None = None
    """"create" or "update" while the function is Pending / its update InProgress (``settle_s``)."""
    settled_at: float = 0.0
    started: int = 0
    """Execution environments started for this function, all versions together."""

    def qualified(self, qualifier: str | None) -> str:
        return f"{self.arn}:{qualifier}" if qualifier else self.arn

    def config(self, qualifier: str | None) -> FunctionConfig:
        """The configuration a qualifier (none, $LATEST, a version or an alias) names."""
        if qualifier in (None, "", LATEST):
            return self.latest
        version = self.aliases[qualifier].version if qualifier in self.aliases else qualifier
        if version == LATEST:
            return self.latest
        if version not in self.versions:
            raise LambdaError(
                "ResourceNotFoundException", f"Function not found: {self.qualified(qualifier)}", 404
            )
        return self.versions[version]

    def alias(self, alias_name: str) -> Alias:
        if alias_name not in self.aliases:
            raise LambdaError(
                "ResourceNotFoundException", f"Cannot find alias arn: {self.qualified(alias_name)}", 404
            )
        return self.aliases[alias_name]

    # ----------------------------------------------------------------------- states

    def state(self) -> tuple[str, str]:
        """(State, LastUpdateStatus) of $LATEST."""
        if self.settling is not None and time.monotonic() >= self.settled_at:
            self.settling = None
        if self.settling == "create":
            return "Pending", "InProgress"
        return "Active", "InProgress" if self.settling == "update" else "Successful"

    def settle(self, kind: str, settle_s: float) -> None:
        if settle_s > 0:
            self.settling, self.settled_at = kind, time.monotonic() + settle_s

    def check_idle(self) -> None:
        state, update = self.state()
        if state == "Pending" or update == "InProgress":
            raise LambdaError(
                "ResourceConflictException",
                "The operation cannot be performed at this time. An update is in progress for resource: "
                + self.arn,
                409,
            )

    def check_revision(self, revision_id: object) -> None:
        if revision_id and revision_id != self.latest.revision_id:
            raise LambdaError(
                "PreconditionFailedException",
                "The Revision Id provided does not match the latest Revision Id. Call the "
                "GetFunction/GetAlias API to retrieve the latest Revision Id",
                412,
            )

    def publish(self, description: str) -> FunctionConfig:
        """A new version frozen from $LATEST, or the last one when nothing changed since (as on Lambda)."""
        if self.versions:
            last = self.versions.get(str(self.next_version - 1))
            if last is not None and last.content() == self.latest.content():
                return last
        version = str(self.next_version)
        self.next_version += 1
        self.versions[version] = replace(
            self.latest,
            version=version,
            revision_id=str(uuid.uuid4()),
            description=description or self.latest.description,
        )
        return self.versions[version]

    # ----------------------------------------------------------------------- documents

    def document(self, config: FunctionConfig) -> dict[str, Any]:
        """Lambda's FunctionConfiguration."""
        latest = config.version == LATEST
        state, update = self.state() if latest else ("Active", "Successful")
        doc: dict[str, Any] = {
            "FunctionName": config.name,
            "FunctionArn": self.qualified(None if latest else config.version),
            "Role": config.role,
            "CodeSize": 0,
            "Description": config.description,
            "Timeout": config.timeout_s,
            "MemorySize": config.memory_mb,
            "LastModified": config.last_modified,
            "CodeSha256": config.code_sha256,
            "Version": config.version,
            "Environment": {"Variables": dict(config.environment)},
            "TracingConfig": {"Mode": config.tracing_mode},
            "RevisionId": config.revision_id,
            "State": state,
            "LastUpdateStatus": update,
            "PackageType": "Image",
            "Architectures": list(config.architectures),
            "EphemeralStorage": {"Size": config.ephemeral_mb},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{config.name}"},
        }
        if state == "Pending":
            doc.update(StateReason="The function is being created.", StateReasonCode="Creating")
        return doc

    def alias_document(self, alias: Alias) -> dict[str, Any]:
        return {
            "AliasArn": self.qualified(alias.name),
            "Name": alias.name,
            "FunctionVersion": alias.version,
            "Description": alias.description,
            "RevisionId": alias.revision_id,
        }


@dataclass(frozen=True)
class EmulatorInvocation:
    """The result of Invoke, as the API answers it."""

    status: int
    payload: bytes
    request_id: str
    executed_version: str
    function_error: str | None = None
    log_result: str | None = None


@dataclass(frozen=True)
class EnvironmentInfo:
    id: str
    version: str
    busy: bool
    invocations: int
    pid: int | None


def split_name(function_name: str, qualifier: str | None = None) -> tuple[str, str | None]:
    """A name, a partial or full ARN, or ``name:qualifier`` -> (name, qualifier)."""
    match = NAME.fullmatch(function_name or "")
    if match is None:
        raise LambdaError(
            "ValidationException",
            f"1 validation error detected: Value '{function_name}' at 'functionName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern",
        )
    derived = match["qualifier"]
    if qualifier and derived and qualifier != derived:
        raise invalid("The derived qualifier from the function name does not match the specified qualifier.")
    return match["name"], qualifier or derived


def iter_log(log_result: str | None) -> Iterator[str]:
    """The lines of a base64 ``LogResult`` (what ``LogType=Tail`` returns)."""
    if log_result:
        yield from base64.b64decode(log_result).decode(errors="replace").splitlines()
