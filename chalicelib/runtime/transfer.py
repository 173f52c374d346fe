"""Payloads by reference, inside the model's function: GET an input, PUT an answer, over presigned URLs.

The control plane presigns each URL for one object and one request (``core/wire.Spill``), so a function
holds no storage credentials for them and can reach no other object. Stdlib only: the runtime ships no
AWS SDK. Sizes are bounded before the bytes are read; a failed transfer is an ``OSError``.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

TIMEOUT_S = 60.0
CHUNK = 1024 * 1024
ATTEMPTS = 3


class TransferError(OSError):
    """A presigned URL did not give (or take) the object."""


def _checked(url: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise TransferError("a payload reference must be an http(s) URL")
    return url


def fetch(url: str, max_bytes: int) -> bytes:
    """The object at ``url``; TransferError if it is larger than ``max_bytes`` or does not arrive."""
    request = urllib.request.Request(_checked(url), method="GET")  # noqa: S310 - scheme checked above
    return _retried(lambda: _read(request, max_bytes))


def _read(request: urllib.request.Request, max_bytes: int) -> bytes:
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise TransferError(f"the referenced object is {declared} bytes, over the {max_bytes} allowed")
        parts, size = [], 0
        while chunk := response.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise TransferError(f"the referenced object is over the {max_bytes} bytes allowed")
            parts.append(chunk)
        return b"".join(parts)


def store(url: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """PUT ``data`` to the presigned ``url`` (S3 takes up to 5 GB in one PUT)."""
    headers = {"Content-Type": content_type, "Content-Length": str(len(data))}

    def put() -> None:
        request = urllib.request.Request(_checked(url), data=data, method="PUT", headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            response.read()

    _retried(put)


def _retried(call: Callable[[], T]) -> T:
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except TransferError:
            raise
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == ATTEMPTS - 1:
                raise TransferError(f"the payload store answered {exc.code} {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            if attempt == ATTEMPTS - 1:
                raise TransferError(f"the payload store did not answer: {exc}") from None
        time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")
