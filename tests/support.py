"""Helpers the API test suites share: bundles of the examples, a per-account client, a deploy."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from chalice.test import Client

from chalicelib import wiring
from chalicelib.api.deps import services
from chalicelib.services.accounts import generate_key

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = generate_key()


def bundle(example: str = "iris-onnx", *, config: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted((ROOT / "examples" / example).iterdir()):
            if path.is_file() and not (config is not None and path.name == "modelport.yaml"):
                tar.add(path, arcname=path.name)
        if config is not None:
            data = config.encode()
            info = tarfile.TarInfo("modelport.yaml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Api:
    """A thin client for one account."""

    def __init__(self, client: Client, key: str | None) -> None:
        self.client, self.key = client, key

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if self.key is not None:
            hdrs["Authorization"] = f"Bearer {self.key}"
        raw = body if isinstance(body, (str, bytes)) else (json.dumps(body) if body is not None else None)
        return getattr(self.client.http, method.lower())(path, headers=hdrs, body=raw)


def new_account(admin: Api, name: str) -> tuple[Api, str]:
    r = admin.call("POST", "/v1/accounts", {"name": name})
    assert r.status_code == 201, r.body
    return Api(admin.client, r.json_body["api_key"]), r.json_body["account"]["account_id"]


def deploy(container: wiring.Container, owner: Api, name: str, data: bytes) -> dict[str, Any]:
    """Upload like a client would (through the presigned target), then deliver the S3 event."""
    r = owner.call("POST", f"/v1/models/{name}/versions", {"size_bytes": len(data)})
    assert r.status_code == 201, r.body
    upload = r.json_body["upload"]
    info = container.artifacts.put(upload["key"], data)
    deployment = services().deployments.handle_s3_object(
        container.settings.bundle_bucket, info.key, info.etag, info.size_bytes
    )
    assert deployment is not None
    return {"version": r.json_body["version"]["version"], "deployment": deployment}


def modelport_manifest(directory: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """``modelport manifest DIR`` as a user runs it (a process of its own, none of this one's settings),
    and its wall time."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", "manifest", str(directory)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    return result, time.perf_counter() - started
