"""The boto3 adapters of the ports (DynamoDB, S3) and the infrastructure they run on.

Each adapter takes its low-level client, so the same code runs against AWS, moto and LocalStack; only the
client's ``endpoint_url`` differs.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from chalicelib.core.errors import Unavailable

_OUTAGES = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)


def outage(exc: BaseException) -> Unavailable | None:
    """``exc`` as the domain's ``Unavailable`` when it says a service did not answer (after the client's
    retries): an HTTP 5xx or a connection failure. None for anything else (a bug, a missing table)."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status < 500:
            return None
        error = exc.response.get("Error", {})
        what = f"{exc.operation_name}: {error.get('Code', status)}"
        return Unavailable(f"a backing service did not answer ({what})", hint="try again in a moment")
    if isinstance(exc, _OUTAGES) or (
        isinstance(exc, BotoCoreError) and "connect" in type(exc).__name__.lower()
    ):
        return Unavailable(f"a backing service cannot be reached ({type(exc).__name__})", hint="try again")
    return None
