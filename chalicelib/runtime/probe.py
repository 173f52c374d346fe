"""The sandboxed probe: opens one artifact that needs code to open and prints its native contract.

It runs only inside a sandbox (a locked-down container, the probe Lambda function), never in the control
plane. Two entry points:

- CLI, for a container: ``python -m chalicelib.runtime.probe ARTIFACT REL FORMAT [TRUSTED_TYPE...]``;
  stdout carries only the result document (``chalicelib.core.probe``), whatever the artifact prints goes
  to stderr (fd 1 is pointed at fd 2 before loading);
- ``handler(event, context)``, for Lambda: the artifact arrives base64 in ``artifact_b64`` (small files) or
  as a presigned GET URL in ``artifact_url``; it returns the same document.

Failures are reported by code only; their text goes to stderr, which the control plane logs, bounded.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import traceback
import urllib.request
from pathlib import Path
from typing import Any

from chalicelib.core.errors import ModelportError
from chalicelib.core.probe import MAX_OUTPUT, ContractError, contract_document, error_document

MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
_FORMATS = ("pickle", "skops")


def probe(path: Path, rel: str, fmt: str, trusted_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load the artifact and return the result document; never raises."""
    from chalicelib.runtime.contract import contract_from_estimator

    try:
        if fmt == "skops":
            import skops.io as sio

            est = sio.load(path, trusted=list(trusted_types))
        elif fmt == "pickle":
            import joblib

            est = joblib.load(path)
        else:
            raise ValueError(f"unknown format {fmt!r}")
        doc = contract_document(contract_from_estimator(est, rel=rel, fmt=fmt))
    except ContractError as exc:
        return error_document(exc)
    except BaseException:  # untrusted code may raise anything, SystemExit included
        traceback.print_exc(limit=3, file=sys.stderr)
        return error_document(None)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[2] not in _FORMATS:
        print("usage: probe ARTIFACT REL pickle|skops [TRUSTED_TYPE...]", file=sys.stderr)
        return 2
    path, rel, fmt, *trusted = args
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything the artifact prints goes to stderr, never into the result
    doc = probe(Path(path), rel, fmt, tuple(trusted))
    text = json.dumps(doc)
    out.write(text[: MAX_OUTPUT + 1])
    out.flush()
    return 0 if "contract" in doc else 3


def _fetch(url: str, dest: Path) -> None:
    if not url.startswith("https://") and not url.startswith("http://"):
        raise ValueError("artifact_url is not an http(s) URL")
    with urllib.request.urlopen(url, timeout=30) as response, dest.open("wb") as fh:  # noqa: S310
        total = 0
        while block := response.read(1 << 20):
            total += len(block)
            if total > MAX_ARTIFACT_BYTES:
                raise ValueError("artifact is larger than the probe accepts")
            fh.write(block)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The probe Lambda function's handler: the event names the artifact, the result is the document."""
    try:
        rel = str(event["rel"])
        fmt = str(event["format"])
        trusted = tuple(str(t) for t in event.get("trusted_types") or ())
        if fmt not in _FORMATS:
            raise ValueError(f"unknown format {fmt[:20]!r}")
        with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
            path = Path(tmp) / (Path(rel).name or "artifact")
            if "artifact_b64" in event:
                path.write_bytes(base64.b64decode(str(event["artifact_b64"]), validate=True))
            else:
                _fetch(str(event["artifact_url"]), path)
            stdout = os.dup(1)
            os.dup2(2, 1)
            try:
                return probe(path, rel, fmt, trusted)
            finally:
                os.dup2(stdout, 1)
                os.close(stdout)
    except (KeyError, ValueError, OSError, ModelportError):
        traceback.print_exc(limit=3, file=sys.stderr)
        return error_document(None)


if __name__ == "__main__":
    sys.exit(main())
