"""A client of the OCI Distribution API (registry v2): what a push and a pull need, nothing else.

Blobs are checked (``HEAD``) before they are sent, mounted from another repository of the same registry when
the registry allows it, else uploaded in one ``PUT`` (small) or in ``PATCH`` chunks; manifests are put by tag
and their digest read back. Authentication follows the registry's challenge: ``Basic`` with the credentials
given, or a ``Bearer`` token fetched from the realm it names (ECR answers Basic with ``AWS:<token>``). HTTP is
used only for loopback registries; the Authorization header never follows a redirect (blob downloads redirect
to S3 on ECR).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from chalicelib.docker import PushError
from chalicelib.oci import MANIFEST_TYPES

CHUNK_BYTES = 16 * 1024 * 1024
"""Blobs above this go in chunks of this size (ECR wants parts of at least 5 MiB)."""
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"


def parse_reference(image: str) -> Reference:
    """``host[:port]/repo[:tag][@sha256:...]``: the host must be explicit (a dot, a port or localhost)."""
    name, _, digest = image.partition("@")
    host, _, rest = name.partition("/")
    if not rest or not ("." in host or ":" in host or host == "localhost"):
        raise PushError(f"{image!r} names no registry host (like 127.0.0.1:5000/name:tag)")
    repository, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        repository, tag = rest, ""
    return Reference(host, repository, tag or None, digest or None)


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _NoAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.remove_header("Authorization")
        return new


class RegistryClient:
    """One registry; ``username``/``password`` answer its challenge (Basic, or a token realm's Basic)."""

    def __init__(
        self,
        host: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.host = host.rstrip("/")
        plain = _loopback(self.host) if insecure is None else insecure
        self.base = f"{'http' if plain else 'https'}://{self.host}"
        self.credentials = (username, password) if username is not None and password is not None else None
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoAuthOnRedirect())
        self._authorization: dict[str, str] = {}
        """A header value per scope (repository), learnt from the last challenge."""

    # ------------------------------------------------------------------ HTTP

    def _request(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        body: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        for attempt in range(2):
            request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - http(s) only
            for key, value in (headers or {}).items():
                request.add_header(key, value)
            auth = self._authorization.get(repository)
            if auth:
                request.add_unredirected_header("Authorization", auth)
            try:
                response = self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as err:
                if err.code == 401 and attempt == 0 and self._answer(err, repository):
                    if hasattr(body, "seek"):
                        body.seek(0)  # type: ignore[union-attr]
                    continue
                if err.code in ok:
                    return err
                detail = err.read(2000).decode("utf-8", "replace")
                raise PushError(
                    f"registry {self.host}: {method} {urllib.parse.urlsplit(url).path} -> {err.code}"
                    f" {_registry_error(detail)}"
                ) from None
            except OSError as exc:
                raise PushError(f"registry {self.host} does not answer: {exc}") from None
            if response.status not in ok:
                raise PushError(f"registry {self.host}: {method} {url} -> {response.status}")
            return response
        raise PushError(f"registry {self.host} refused the credentials for {repository}")

    def _answer(self, err: urllib.error.HTTPError, repository: str) -> bool:
        """Learn the Authorization of the challenge in ``err``; False when it cannot be answered."""
        challenge = err.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None:
                return False
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            self._authorization[repository] = f"Basic {token}"
            return True
        if scheme.lower() != "bearer":
            return False
        fields = dict(_CHALLENGE.findall(params))
        realm = fields.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            return False
        query = {"service": fields.get("service", ""), "scope": f"repository:{repository}:pull,push"}
        token_request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}")  # noqa: S310
        if self.credentials is not None:
            basic = base64.b64encode(":".join(self.credentials).encode()).decode()
            token_request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(token_request, timeout=self.timeout) as response:  # noqa: S310
                doc = json.loads(response.read(65536))
        except (OSError, ValueError):
            return False
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str):
            return False
        self._authorization[repository] = f"Bearer {token}"
        return True

    def _url(self, repository: str, tail: str) -> str:
        return f"{self.base}/v2/{repository}/{tail}"

    # ------------------------------------------------------------------ blobs

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self._request("HEAD", self._url(repository, f"blobs/{digest}"), repository, ok=(200, 404))
        return int(response.status) == 200

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Link a blob of another repository of this registry; False when the registry would not."""
        query = urllib.parse.urlencode({"mount": digest, "from": source_repository})
        response = self._request(
            "POST", self._url(repository, f"blobs/uploads/?{query}"), repository, body=b"", ok=(201, 202)
        )
        if int(response.status) == 201:
            return True
        self._cancel(response, repository)
        return False

    def push_blob(
        self, repository: str, digest: str, path: Path, *, progress: Callable[[int], None] = lambda _: None
    ) -> None:
        """Upload the file at ``path`` as ``digest`` (monolithic below CHUNK_BYTES, chunked above)."""
        size = path.stat().st_size
        response = self._request(
            "POST", self._url(repository, "blobs/uploads/"), repository, body=b"", ok=(202,)
        )
        location = self._location(response)
        with path.open("rb") as fh:
            if size <= CHUNK_BYTES:
                url = _with_query(location, digest=digest)
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
                self._request("PUT", url, repository, body=fh, headers=headers, ok=(201,))
                progress(size)
                return
            offset = 0
            while offset < size:
                chunk = fh.read(CHUNK_BYTES)
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(chunk)),
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                }
                response = self._request(
                    "PATCH", location, repository, body=chunk, headers=headers, ok=(202,)
                )
                location = self._location(response)
                offset += len(chunk)
                progress(len(chunk))
        self._request(
            "PUT", _with_query(location, digest=digest), repository, body=b"",
            headers={"Content-Length": "0"}, ok=(201,),
        )  # fmt: skip

    def get_blob(self, repository: str, digest: str, dest: Path) -> None:
        """Download a blob to ``dest``, checking its digest."""
        response = self._request("GET", self._url(repository, f"blobs/{digest}"), repository)
        sha = hashlib.sha256()
        with dest.open("wb") as out:
            while chunk := response.read(1024 * 1024):
                sha.update(chunk)
                out.write(chunk)
        if f"sha256:{sha.hexdigest()}" != digest:
            dest.unlink(missing_ok=True)
            raise PushError(f"registry {self.host}: blob {digest[:19]} arrived with another digest")

    def get_blob_bytes(self, repository: str, digest: str, *, limit: int = 4 * 1024 * 1024) -> bytes:
        response = self._request("GET", self._url(repository, f"blobs/{digest}"), repository)
        data = bytes(response.read(limit + 1))
        if len(data) > limit or f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise PushError(f"registry {self.host}: blob {digest[:19]} is too large or corrupt")
        return data

    # ------------------------------------------------------------------ manifests

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index."""
        response = self._request(
            "GET", self._url(repository, f"manifests/{reference}"), repository,
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )  # fmt: skip
        data = bytes(response.read(4 * 1024 * 1024))
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        media_type = str(response.headers.get("Content-Type", "")).split(";")[0].strip()
        return data, media_type or json.loads(data).get("mediaType", ""), digest

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Put a manifest under a tag (or its digest); returns its digest."""
        self._request(
            "PUT", self._url(repository, f"manifests/{reference}"), repository, body=data,
            headers={"Content-Type": media_type}, ok=(201,),
        )  # fmt: skip
        return f"sha256:{hashlib.sha256(data).hexdigest()}"

    # ------------------------------------------------------------------ helpers

    def _location(self, response: Any) -> str:
        location = response.headers.get("Location")
        if not location:
            raise PushError(f"registry {self.host} started an upload without a Location")
        return urllib.parse.urljoin(self.base + "/", str(location))

    def _cancel(self, response: Any, repository: str) -> None:
        location = response.headers.get("Location")
        if location:
            url = urllib.parse.urljoin(self.base + "/", str(location))
            with contextlib.suppress(PushError):
                self._request("DELETE", url, repository, ok=(204, 404, 405))


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _registry_error(detail: str) -> str:
    try:
        errors = json.loads(detail).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:300]
    except (ValueError, AttributeError):
        return " ".join(detail.split())[:300]


def copy_stream(source: IO[bytes], dest: IO[bytes]) -> None:
    shutil.copyfileobj(source, dest, 1024 * 1024)
