"""botocore's "the service did not answer" as the domain's ``Unavailable``, at the adapters' edge.

Every boto3 adapter class is decorated with ``translates_outages``, so what leaves an adapter is a domain
error (or a bug): the API answers ``Unavailable`` with 503 and the deployment retries it, and neither needs to
know botocore's exceptions.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from chalicelib.core.errors import Unavailable

T = TypeVar("T")
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


def translates_outages(cls: type[T]) -> type[T]:
    """Class decorator: each public method of the adapter ``cls`` raises an outage as ``Unavailable``
    (chained to botocore's error for the log); everything else passes unchanged."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _translated(member))
    return cls


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            unavailable = outage(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    return wrapper
