"""The model function's structured log lines: one JSON line per invocation, on stdout, which Lambda ships
to CloudWatch Logs as one event. The keys are the API's (docs/observability.md): ``trace_id``, ``model``,
``version``; ``role`` is the part of the pipeline this function ran. Stdlib JSON, not Powertools: it is not
in a model's image, whose cold start it would lengthen. The START/END/REPORT lines stay Lambda's own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from chalicelib.core.config_file import ModelConfigFile

SERVICE = "modelport-runtime"


def log_line(fields: Mapping[str, Any]) -> None:
    """``fields`` as one compact JSON line on stdout; a closed stdout never fails an invocation."""
    try:
        sys.stdout.write(json.dumps(fields, separators=(",", ":"), default=str) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def invocation_line(
    manifest: ModelConfigFile, role: str, final: Mapping[str, Any], trace_id: str | None, *, cold: bool
) -> dict[str, Any]:
    """The line of one invocation whose answer (or intermediate document) is ``final``."""
    run = final["runs"][-1]
    line: dict[str, Any] = {
        "level": "INFO",
        "message": "invocation",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
        "service": SERVICE,
        "trace_id": trace_id,
        "model": manifest.name,
        "version": manifest.version,
        "role": role,
        "status": final.get("status"),
        "duration_ms": run["ms"],
        "cold_start": cold,
    }
    if "init_ms" in run:
        line["init_ms"] = run["init_ms"]
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    if function:
        line["function_name"] = function
    return line


def log_invocation(
    manifest: ModelConfigFile, role: str, final: Mapping[str, Any], trace_id: str | None, *, cold: bool
) -> None:
    log_line(invocation_line(manifest, role, final, trace_id, cold=cold))
