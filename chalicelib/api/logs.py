"""``GET /v1/models/{name}/logs``: the model's log lines for its owner (``services/logs.py`` decides which).

Query parameters: ``trace=`` one request's lines (its ``X-Amzn-Trace-Id`` root), ``since=`` minutes back
(default 15, at most a day), ``limit=`` the newest lines (1-500, default 200), ``version=`` another version
than the default."""

from __future__ import annotations

import re

from chalice.app import Response

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import Api, Query, bounded, caller, json_response, path_int, path_name, query_param
from chalicelib.core.errors import InvalidRequest, Unavailable

api = Api(__name__, "models", api_key)
blueprint = api.blueprint

MINUTES = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,3})?")


@api.route(
    "/v1/models/{name}/logs", summary="The model's log lines (one request's, by trace id, or the newest)",
    errors=(400, 404, 503), query=(
        Query("trace", "one request's lines: its X-Amzn-Trace-Id root, 1-<8 hex>-<24 hex>"),
        Query("since", "minutes back (default 15)", bounded("number", 0, 1440, exclusive=True)),
        Query("limit", "the newest lines (default 200)", bounded("integer", 1, 500)),
        Query("version", "another version than the default", bounded("integer", 1)),
    ),
)  # fmt: skip
def model_logs(name: str) -> Response:
    request = blueprint.current_request
    logs = services().logs
    if logs is None:
        raise Unavailable("this deployment reads no logs back", hint="see docs/observability.md")
    since = query_param(request, "since")
    if since is not None and not MINUTES.fullmatch(since):
        raise InvalidRequest(
            "since is minutes back, e.g. 15 or 0.5",
            errors=[{"pointer": "?since", "message": "not a number of minutes"}],
        )
    limit, version = query_param(request, "limit"), query_param(request, "version")
    doc = logs.lines(
        caller(request),
        path_name(name),
        version=path_int(version, "version") if version is not None else None,
        trace=query_param(request, "trace"),
        since_min=float(since) if since is not None else 15,
        limit=path_int(limit, "limit") if limit is not None else 200,
    )
    return json_response(doc)
