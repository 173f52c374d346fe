"""Payloads past an event's limits travel by reference, through the data bucket.

Lambda takes 6 MB per synchronous event and answer, a Step Functions state 256 KB. Past that an input is
uploaded first (``POST /v1/uploads``: a presigned POST of up to ``MAX_REFERENCE_BYTES``) and named by
``s3://<data bucket>/uploads/<account>/<id>``; the model's function gets a presigned GET of it
(``body_url``). An answer, or a document between a chain's stages, that would not fit is PUT by the
function to a presigned URL made for that one request (``core/wire.Spill``) and named by a stub. So
every URL a function holds reaches one object, for one request, for less than an hour; the function
needs no storage rights of its own. The bucket expires ``uploads/`` and ``spill/`` by lifecycle rules.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from chalicelib.core.errors import InvalidRequest, NotFound, TooLarge
from chalicelib.core.ports import ArtifactStore, ObjectInfo
from chalicelib.core.records import Account
from chalicelib.core.wire import MAX_REFERENCE_BYTES, MAX_STATE_PAYLOAD, MAX_SYNC_PAYLOAD, Spill

UPLOAD_PREFIX = "uploads/"
SPILL_PREFIX = "spill/"
UPLOAD_EXPIRES_S = 3600
URL_EXPIRES_S = 1800
"""A presigned URL in an event outlives the longest a function runs (900 s) and its queueing."""
STATE_LIMIT = MAX_STATE_PAYLOAD - 16 * 1024
"""The most a chain's stage answers inline: a state's 256 KB, less room for its envelope."""
SYNC_LIMIT = MAX_SYNC_PAYLOAD - 8 * 1024
"""The most a fused function answers inline: Lambda's 6 MB, less room for its envelope."""


class Payloads:
    """The data bucket (``store``, named ``bucket``) as the place for payloads by reference."""

    def __init__(self, store: ArtifactStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket

    def new_upload(self, caller: Account, *, max_bytes: int = MAX_REFERENCE_BYTES) -> dict[str, Any]:
        """Where the caller may POST one input (form ``fields`` plus the file as ``file``), and the
        ``input_url`` that names it afterwards."""
        key = f"{UPLOAD_PREFIX}{caller.account_id}/{secrets.token_hex(12)}"
        upload = self.store.presign_upload(key, max_bytes=max_bytes, expires_in=UPLOAD_EXPIRES_S)
        return {
            "input_url": f"s3://{self.bucket}/{key}",
            "upload": {"url": upload.url, "fields": upload.fields},
            "max_bytes": max_bytes,
            "expires_in": UPLOAD_EXPIRES_S,
        }

    def resolve(self, caller: Account, input_url: str) -> ObjectInfo:
        """The object ``input_url`` names, once it is the caller's own upload and within the limit."""
        parts = urlsplit(input_url)
        key = parts.path.lstrip("/")
        own = f"{UPLOAD_PREFIX}{caller.account_id}/"
        if parts.scheme != "s3" or parts.netloc != self.bucket or parts.query or parts.fragment:
            raise InvalidRequest(
                f"input_url must be s3://{self.bucket}/{own}<id>, as POST /v1/uploads gives it",
                hint="upload the input first: POST /v1/uploads",
            )
        if not key.startswith(own if not caller.is_admin else UPLOAD_PREFIX) or ".." in key:
            raise NotFound(f"no upload {input_url[:200]!r} of this account")
        try:
            info = self.store.head(key)
        except NotFound:
            raise NotFound(f"nothing was uploaded to {input_url[:200]!r} (yet)") from None
        if info.size_bytes > MAX_REFERENCE_BYTES:
            raise TooLarge(f"the input is {info.size_bytes} bytes, over the {MAX_REFERENCE_BYTES} allowed")
        if info.size_bytes == 0:
            raise InvalidRequest("the uploaded input is empty")
        return info

    def body_url(self, key: str) -> str:
        return self.store.presign_download(key, expires_in=URL_EXPIRES_S)

    def keep(self, body: bytes) -> ObjectInfo:
        """A request body that fits the API but not the event (a chain's 256 KB): kept for the function."""
        return self.store.put(f"{SPILL_PREFIX}{secrets.token_hex(12)}/request", body)

    def spill(self, stages: list[str], *, chained: bool, reply_key: str | None = None) -> tuple[Spill, str]:
        """The request's Spill and the key its stored answer would have. ``stages``: the chain's roles,
        each after the first getting a hop."""
        base = f"{SPILL_PREFIX}{secrets.token_hex(12)}/"
        key = reply_key or base + "reply"
        spill: Spill = {
            "limit": STATE_LIMIT if chained else SYNC_LIMIT,
            "reply": self.store.presign_put(key, expires_in=URL_EXPIRES_S),
        }
        if chained and len(stages) > 1:
            spill["handoff"] = {
                role: {
                    "put": self.store.presign_put(base + role, expires_in=URL_EXPIRES_S),
                    "get": self.store.presign_download(base + role, expires_in=URL_EXPIRES_S),
                }
                for role in stages[1:]
            }
        return spill, key

    def stored_url(self, key: str) -> str:
        return self.store.presign_download(key, expires_in=URL_EXPIRES_S)
