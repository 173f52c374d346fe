"""What an account's invocations used: ``GET /v1/usage`` per model, with totals and each day (UTC).

Query parameters: ``model=`` one model, ``from=``/``to=`` ISO dates (inclusive; default the last 30 days),
``account=`` another account's (admins only: anyone else gets 403, never another account's data)."""

from __future__ import annotations

from chalice.app import Response

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import DATE, Api, Query, caller, json_response, query_param

api = Api(__name__, "usage", api_key)
blueprint = api.blueprint


@api.route(
    "/v1/usage", summary="Invocations, errors, billed ms, cost and p50/p99 latency per model and day",
    errors=(400, 403), query=(
        Query("model", "one model"),
        Query("from", "the first UTC day, YYYY-MM-DD (default: 30 days back)", DATE),
        Query("to", "the last UTC day, YYYY-MM-DD (default: today)", DATE),
        Query("account", "another account's usage (admins only)"),
    ),
)  # fmt: skip
def usage() -> Response:
    request = blueprint.current_request
    doc = services().usage.usage(
        caller(request),
        model=query_param(request, "model"),
        first=query_param(request, "from"),
        last=query_param(request, "to"),
        account=query_param(request, "account"),
    )
    return json_response(doc)
