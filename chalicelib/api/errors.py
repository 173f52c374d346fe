"""The one map from domain errors to HTTP responses: each error class carries its status."""

from __future__ import annotations

import json

from chalice.app import Response

from chalicelib.core.errors import ModelportError


def error_response(exc: ModelportError) -> Response:
    return Response(
        body=json.dumps(exc.to_dict()),
        status_code=exc.http_status,
        headers={"Content-Type": "application/json"},
    )
