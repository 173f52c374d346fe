"""The CLI's client of the control API: deploy a model directory, invoke a model, read its function logs.

It talks HTTP to the API (``MODELPORT_API_URL`` + ``MODELPORT_API_KEY``, else what ``modelport up`` saved)
exactly as any user would: reserve a version, upload the bundle with the presigned POST, then follow the
deployment the upload started. Logs come from CloudWatch Logs (``/aws/lambda/<function>``) through the
AWS endpoint (``MODELPORT_ENDPOINT_URL``, the local stack's edge, or AWS itself).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from chalicelib.core.config import CONFIG_FILE, parse_config_yaml
from chalicelib.core.errors import ModelportError
from chalicelib.core.records import JOB_DONE

TERMINAL = ("READY", "FAILED")
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".venv", "node_modules"})


class ApiError(ModelportError):
    """The API answered an error document; ``status`` is its HTTP status."""

    def __init__(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class NoApi(ModelportError):
    """Neither the environment nor a running local stack says where the API is."""


@dataclass(frozen=True)
class Connection:
    api_url: str
    api_key: str
    endpoint_url: str | None = None
    """The AWS endpoint (the local stack's edge); None: AWS itself."""


def connection(env: Mapping[str, str] | None = None, *, local: Connection | None = None) -> Connection:
    """``MODELPORT_API_URL`` and ``MODELPORT_API_KEY`` when set, else ``local``: the running local stack's
    (the CLI finds it; its admin key unless ``MODELPORT_API_KEY`` names another)."""
    env = os.environ if env is None else env
    url, key = env.get("MODELPORT_API_URL"), env.get("MODELPORT_API_KEY")
    if url and key:
        return Connection(url.rstrip("/"), key, env.get("MODELPORT_ENDPOINT_URL") or None)
    if local is None:
        raise NoApi(
            "no Modelport API to talk to",
            hint="run `modelport up` for the local stack, or set MODELPORT_API_URL and MODELPORT_API_KEY",
        )
    return Connection(local.api_url, key or local.api_key, local.endpoint_url)


def console_url(api_url: str, api_key: str, *, model: str | None = None) -> str:
    """The web console of the API at ``api_url``, signed in with ``api_key`` by the URL's fragment
    (``#key=...``, never sent to a server); ``model``: its invoke form opens directly."""
    fragment = {"key": api_key, **({"model": model} if model else {})}
    return f"{api_url.rstrip('/')}/console/#{urlencode(fragment)}"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class Client:
    """One keep-alive connection to the API; ``request`` raises ``ApiError`` for 4xx/5xx answers."""

    def __init__(self, conn: Connection, *, timeout_s: float = 120.0) -> None:
        self.conn = conn
        self.timeout_s = timeout_s
        self._http: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._http is None:
            self._http = _open(self.conn.api_url, self.timeout_s)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        sent = {"Authorization": f"Bearer {self.conn.api_key}", **(headers or {})}
        base = urlsplit(self.conn.api_url).path.rstrip("/")
        for attempt in (1, 2):  # a keep-alive connection the server closed meanwhile: once more
            http_conn = self._connection()
            try:
                http_conn.request(method, base + path, body=body, headers=sent)
                answer = http_conn.getresponse()
                data = answer.read()
            except (ConnectionError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2:
                    raise ModelportError(f"the API at {self.conn.api_url} does not answer: {exc}") from None
                continue
            except OSError as exc:
                self.close()
                raise ModelportError(f"the API at {self.conn.api_url} does not answer: {exc}") from None
            response = Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)
            if answer.status >= 400:
                raise _api_error(response)
            return response
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, doc: Any = None) -> Any:
        body = None if doc is None else json.dumps(doc).encode()
        return self.request(method, path, body, {"Content-Type": "application/json"}).json()


def _open(url: str, timeout_s: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)


def _api_error(response: Response) -> ApiError:
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "message" in doc:
        return ApiError(response.status, str(doc.get("code", "")), str(doc["message"]), doc.get("hint"))
    text = response.body[:300].decode(errors="replace").strip()
    return ApiError(response.status, "HTTP", f"the API answered {response.status}: {text}")


# --------------------------------------------------------------------------- bundles and uploads


def make_bundle(model_dir: Path) -> bytes:
    """``model_dir`` as a tar.gz, files and folders only (links are refused by the deployment anyway),
    without caches and VCS folders, in a stable order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(model_dir.rglob("*")):
            rel = path.relative_to(model_dir)
            if any(part in SKIPPED_DIRS or part.startswith(".") for part in rel.parts):
                continue
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            tar.add(path, arcname=rel.as_posix(), recursive=False)
    return buf.getvalue()


def post_form(url: str, fields: dict[str, str], data: bytes, timeout_s: float = 300.0) -> int:
    """A browser-style multipart POST of ``fields`` and the file ``data`` (a presigned S3 upload)."""
    boundary = "modelport-" + secrets.token_hex(12)
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bundle"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    body = b"".join(parts) + data + f"\r\n--{boundary}--\r\n".encode()
    parsed = urlsplit(url)
    conn = _open(url, timeout_s)
    try:
        conn.request(
            "POST",
            parsed.path or "/",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        answer = conn.getresponse()
        text = answer.read()
    except OSError as exc:
        raise ModelportError(f"the upload to {parsed.netloc} failed: {exc}") from None
    finally:
        conn.close()
    if answer.status >= 300:
        raise ModelportError(
            f"the upload was refused ({answer.status}): {text[:300].decode(errors='replace')}"
        )
    return answer.status


# --------------------------------------------------------------------------- deploy


@dataclass
class DeployOutcome:
    name: str
    version: int
    status: str
    reason: str | None
    stages: list[dict[str, Any]] = field(default_factory=list)
    bundle_bytes: int = 0
    seconds: float = 0.0
    config: dict[str, Any] | None = None


def deploy(
    client: Client,
    model_dir: Path,
    *,
    name: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
    tick: Callable[[str], None] = lambda line: None,
    timeout_s: float = 1800.0,
    poll_s: float = 0.5,
) -> DeployOutcome:
    """Upload the directory as a new version of model ``name`` and follow the deployment until READY or
    FAILED; ``progress`` gets a line per stage reached, ``tick`` a status line at every poll (what the
    deployment is at, for how long). The caller checks the directory first, so a mistake costs no upload
    (the CLI inspects it); without ``name``, the one ``modelport.yaml`` gives."""
    started = time.monotonic()
    if name is None:
        path = model_dir / CONFIG_FILE
        name = parse_config_yaml(path.read_text(encoding="utf-8"), source=str(path)).name
    data = make_bundle(model_dir)
    created = client.json("POST", f"/v1/models/{name}/versions", {"size_bytes": len(data)})
    version = int(created["version"]["version"])
    progress(f"{name} v{version}: uploading {len(data) / 1024:.0f} KB")
    upload = created["upload"]
    post_form(upload["url"], upload["fields"], data)
    outcome = DeployOutcome(name, version, "PENDING_UPLOAD", None, bundle_bytes=len(data))
    said: set[str] = set()
    deadline = started + timeout_s
    while True:
        record = client.json("GET", f"/v1/models/{name}/versions/{version}")
        outcome.status, outcome.reason = str(record["status"]), record.get("reason")
        for stage in _stages(client, name, version):
            if stage["stage"] not in said:
                said.add(stage["stage"])
                outcome.stages.append(stage)
                progress(f"{name} v{version}: {stage['stage']} ({_stage_seconds(stage):.1f} s)")
        if outcome.status in TERMINAL:
            break
        at = outcome.stages[-1]["stage"] if outcome.stages else outcome.status
        tick(f"{name} v{version}: after {at}, {time.monotonic() - started:.0f} s")
        if time.monotonic() > deadline:
            raise ModelportError(
                f"{name} v{version} is still {outcome.status} after {timeout_s:.0f} s",
                hint=f"follow it with GET /v1/models/{name}/versions/{version}",
            )
        time.sleep(poll_s)
    outcome.seconds = time.monotonic() - started
    if outcome.status == "READY":
        outcome.config = client.json("GET", f"/v1/models/{name}/versions/{version}/config")
    return outcome


def _stages(client: Client, name: str, version: int) -> list[dict[str, Any]]:
    for dep in client.json("GET", f"/v1/models/{name}/deployments"):
        if int(dep["version"]) == version:
            return list(dep["stages"])
    return []


def _stage_seconds(stage: dict[str, Any]) -> float:
    from datetime import datetime

    try:
        began = datetime.fromisoformat(stage["started_at"].replace("Z", "+00:00"))
        ended = datetime.fromisoformat(stage["finished_at"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return (ended - began).total_seconds()


# --------------------------------------------------------------------------- invoke and logs


def invoke(
    client: Client,
    name: str,
    body: bytes,
    *,
    content_type: str,
    accept: str | None = None,
    version: int | None = None,
    respond_async: bool = False,
    webhook: str | None = None,
) -> Response:
    """``respond_async``: ask for a job (``Prefer: respond-async``): a 202 whose Location is the job;
    ``webhook``: the URL its completion is POSTed to (signed). A body past ``UPLOAD_FROM_BYTES`` is
    uploaded first and sent by reference; an answer past the API's limit (a 303) is fetched from where
    it was stored."""
    from urllib.parse import quote, urlencode

    path = f"/v1/models/{name}/invoke" if version is None else f"/v1/models/{name}/versions/{version}/invoke"
    query = {}
    if webhook is not None:
        query["webhook"] = webhook
    if len(body) > UPLOAD_FROM_BYTES:
        query["input_url"], body = upload_input(client, body), b""
    if query:
        path += "?" + urlencode(query, quote_via=quote, safe="")
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    if respond_async:
        headers["Prefer"] = "respond-async"
    answer = client.request("POST", path, body, headers)
    if answer.status == 303:
        return fetch(answer.headers["location"])
    return answer


UPLOAD_FROM_BYTES = 5 * 1024 * 1024
"""A request body larger than this goes by reference (API Gateway takes 10 MB, a Lambda event 6 MB)."""


def upload_input(client: Client, data: bytes) -> str:
    """Upload ``data`` (up to 1 GiB) for a request by reference; its ``input_url``."""
    doc = client.json("POST", "/v1/uploads")
    if len(data) > int(doc["max_bytes"]):
        raise ModelportError(f"the input is {len(data)} bytes, over the {doc['max_bytes']} an upload takes")
    post_form(doc["upload"]["url"], doc["upload"]["fields"], data)
    return str(doc["input_url"])


def fetch(url: str, timeout_s: float = 300.0) -> Response:
    """GET a presigned URL (a stored answer), without the API's credentials."""
    parts = urlsplit(url)
    conn = _open(url, timeout_s)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        answer = conn.getresponse()
        data = answer.read()
    except OSError as exc:
        raise ModelportError(f"the stored answer at {parts.netloc} could not be read: {exc}") from None
    finally:
        conn.close()
    if answer.status >= 300:
        raise ModelportError(f"the stored answer could not be read ({answer.status})")
    return Response(200, {k.lower(): v for k, v in answer.getheaders()}, data)


def follow_job(
    client: Client,
    location: str,
    *,
    progress: Callable[[dict[str, Any]], None] = lambda doc: None,
    timeout_s: float = 3600.0,
    poll_s: float = 0.25,
) -> dict[str, Any]:
    """Poll ``GET location`` (a job) until it is done; each answer goes to ``progress``."""
    import time

    deadline = time.monotonic() + timeout_s
    delay = poll_s
    while True:
        doc: dict[str, Any] = client.json("GET", location)
        progress(doc)
        if doc.get("status") in JOB_DONE:
            return doc
        if time.monotonic() > deadline:
            raise ApiError(
                504, "JobTimeout", f"{location} is still {doc.get('status')} after {timeout_s:.0f} s"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def function_names(client: Client | None, model_name: str) -> tuple[str, ...]:
    """The functions of the model's default version (shared stage functions included, as its deployment
    names them); without one, the names its own functions would have (fused, chained stages)."""
    if client is not None:
        try:
            model = client.json("GET", f"/v1/models/{model_name}")
            if model.get("default_version"):
                config = client.json(
                    "GET", f"/v1/models/{model_name}/versions/{model['default_version']}/config"
                )
                deployed = [f["function_name"] for f in (config.get("deployment") or {}).get("functions", [])]
                if deployed:
                    return tuple(deployed)
        except ApiError:
            pass
    base = f"modelport-{model_name}"
    return (base, f"{base}-pre", f"{base}-model", f"{base}-post")


def log_lines(
    logs_client: Any,
    functions: tuple[str, ...],
    *,
    since_ms: int = 0,
    follow: bool = False,
    poll_s: float = 1.0,
) -> Iterator[tuple[str, int, str]]:
    """(function, timestamp ms, line) of ``functions``, oldest first; ``follow`` keeps polling."""
    from botocore.exceptions import ClientError

    seen: set[str] = set()
    start = since_ms
    while True:
        batch: list[tuple[str, int, str]] = []
        for function in functions:
            kwargs: dict[str, Any] = {"logGroupName": f"/aws/lambda/{function}", "startTime": start}
            try:
                for page in logs_client.get_paginator("filter_log_events").paginate(**kwargs):
                    for event in page.get("events", []):
                        if event["eventId"] not in seen:
                            seen.add(event["eventId"])
                            batch.append((function, int(event["timestamp"]), str(event["message"])))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
        batch.sort(key=lambda e: e[1])
        yield from batch
        if not follow:
            return
        if batch:
            start = batch[-1][1]
        time.sleep(poll_s)
