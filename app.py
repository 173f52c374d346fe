"""Modelport control plane: Chalice wiring only (routes parse, call one service, return)."""

from __future__ import annotations

from chalice import Chalice, Response

from chalicelib.api.errors import error_response
from chalicelib.core.errors import ModelportError
from chalicelib.core.manifest import config_json_schema, manifest_json_schema

app = Chalice(app_name="modelport")


@app.middleware("http")
def _domain_errors(event, get_response):  # type: ignore[no-untyped-def]
    try:
        return get_response(event)
    except ModelportError as exc:
        return error_response(exc)


@app.route("/v1/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.route("/v1/schemas/{which}")
def schema(which: str) -> Response:
    schemas = {"model-config": manifest_json_schema, "modelport-yaml": config_json_schema}
    if which not in schemas:
        from chalicelib.core.errors import NotFound

        raise NotFound(f"no schema {which!r}", hint="try model-config or modelport-yaml")
    return Response(body=schemas[which](), headers={"Content-Type": "application/schema+json"})
