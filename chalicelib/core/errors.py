"""The domain error taxonomy.

Every failure a user can cause or fix is one of these. Adapters translate backend errors
(``botocore`` ``ClientError``, docker API errors) into them; the CLI prints ``str(err)`` as one
line and the API maps ``http_status`` to a response. Anything else is a bug.
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base of all errors a user can act on."""

    http_status = 400
    code = "ModelportError"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        return body


class ConfigError(ModelportError):
    """The configuration parameters (``modelport.yaml`` or an API body) are invalid."""

    code = "ConfigError"

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class ArtifactError(ModelportError):
    """The model artifact is missing, unreadable or not what its framework expects."""

    code = "ArtifactError"


class UnsupportedFramework(ModelportError):
    """No inspector knows this kind of model."""

    code = "UnsupportedFramework"


class UnsafeArtifact(ModelportError):
    """Loading the artifact could run arbitrary code and the config has not opted in."""

    code = "UnsafeArtifact"


class SandboxUnavailable(UnsafeArtifact):
    """The artifact needs code to open and no sandbox runs here to open it in."""


class ConversionError(ModelportError):
    """The model cannot be served by the runtime its config asks for (``runtime: onnx``): the converter
    refuses it, or the converted model does not answer like the original."""

    code = "ConversionError"


class ProtocolError(ModelportError):
    """The pre-processing -> model -> post-processing chain cannot fit together."""

    code = "ProtocolError"


class NotFound(ModelportError):
    http_status = 404
    code = "NotFound"


class Conflict(ModelportError):
    http_status = 409
    code = "Conflict"


class Unauthorized(ModelportError):
    """No valid API key; deliberately says nothing about what exists."""

    http_status = 401
    code = "Unauthorized"


class Forbidden(ModelportError):
    """A valid key without the right for an action on something it may see (e.g. a non-admin)."""

    http_status = 403
    code = "Forbidden"


class TooLarge(ModelportError):
    http_status = 413
    code = "TooLarge"


class UnsafeBundle(ModelportError):
    """An uploaded bundle holds members that could escape its directory or exhaust the disk."""

    code = "UnsafeBundle"


class InvalidRequest(ModelportError):
    """An API request body or parameter does not match what the endpoint takes."""

    code = "InvalidRequest"

    def __init__(
        self, message: str, *, errors: list[dict[str, str]] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.errors = errors or []

    def to_dict(self) -> dict[str, object]:  # type: ignore[override]
        body: dict[str, object] = dict(super().to_dict())
        if self.errors:
            body["errors"] = self.errors
        return body


class FunctionFailed(ModelportError):
    """The model's function crashed or could not start (not a status it answered with)."""

    http_status = 502
    code = "FunctionFailed"


class ResponseTooLarge(ModelportError):
    """The model's answer is over what a synchronous invocation can carry back (Lambda's 6 MB)."""

    http_status = 502
    code = "ResponseTooLarge"


class FunctionTimedOut(ModelportError):
    http_status = 504
    code = "FunctionTimedOut"


class Unavailable(ModelportError):
    """A backing service (a table, the bucket, Lambda) did not answer: try again, nothing to fix."""

    http_status = 503
    code = "ServiceUnavailable"


class UnsupportedMediaType(ModelportError):
    http_status = 415
    code = "UnsupportedMediaType"


class NotAcceptable(ModelportError):
    http_status = 406
    code = "NotAcceptable"
