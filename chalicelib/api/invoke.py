"""Invocations: the model's own protocol (v1), Open Inference Protocol v2, and each model's OpenAPI."""

from __future__ import annotations

import json

from chalice.app import Request, Response

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import Api, caller, json_response, path_int, path_name
from chalicelib.core.errors import InvalidRequest, TooLarge
from chalicelib.core.jsontext import JsonTextError, loads
from chalicelib.core.openapi import openapi_document
from chalicelib.core.wire import MAX_SYNC_PAYLOAD
from chalicelib.services.invoke import InvokeResult
from chalicelib.services.oip import request_id, to_oip_response, to_public_request

api = Api(__name__, "invoke", api_key)
blueprint = api.blueprint

BODY_TYPES = ["application/json", "text/csv", "image/png", "image/jpeg", "image/webp"]
ERRORS = (400, 404, 406, 409, 413, 415, 502, 504)


def _request() -> Request:
    return blueprint.current_request


def _raw(request: Request) -> bytes:
    raw = request.raw_body or b""
    return raw.encode() if isinstance(raw, str) else raw


def _invoke(name: str, version: int | None) -> Response:
    request = _request()
    result = services().invoke.invoke(
        caller(request),
        path_name(name),
        version,
        body=_raw(request),
        content_type=request.headers.get("content-type"),
        accept=request.headers.get("accept"),
    )
    return _response(result)


def _response(result: InvokeResult) -> Response:
    body: bytes | str = result.body
    if result.content_type in ("application/json", "text/csv") or result.content_type.startswith("text/"):
        body = result.body.decode()
    return Response(
        body=body,
        status_code=result.status,
        headers={"Content-Type": result.content_type, **result.headers},
    )


@api.route(
    "/v1/models/{name}/invoke", "POST", summary="Invoke the default version, per the model's protocol",
    errors=ERRORS, content_types=BODY_TYPES,
)  # fmt: skip
def invoke(name: str) -> Response:
    return _invoke(name, None)


@api.route(
    "/v1/models/{name}/versions/{version}/invoke", "POST", summary="Invoke one version", errors=ERRORS,
    content_types=BODY_TYPES,
)  # fmt: skip
def invoke_version(name: str, version: str) -> Response:
    return _invoke(name, path_int(version, "version"))


@api.route(
    "/v1/models/{name}/openapi.json", summary="OpenAPI 3.1 of the model's invoke endpoints", errors=(404, 409)
)
def model_openapi(name: str) -> Response:
    manifest = services().invoke.manifest(caller(_request()), path_name(name), None)
    return json_response(openapi_document(manifest))


@api.route("/v2/health/ready", summary="Open Inference Protocol readiness", auth=False)
def oip_ready() -> Response:
    return json_response({"ready": True})


@api.route("/v2/models/{name}", summary="Open Inference Protocol model metadata", errors=(404, 409))
def oip_metadata(name: str) -> Response:
    manifest = services().invoke.manifest(caller(_request()), path_name(name), None)
    return json_response(manifest.protocol.oip)


@api.route("/v2/models/{name}/infer", "POST", summary="Open Inference Protocol inference", errors=ERRORS)
def oip_infer(name: str) -> Response:
    request = _request()
    who = caller(request)
    s = services()
    manifest = s.invoke.manifest(who, path_name(name), None)
    raw = _raw(request)
    if len(raw) > MAX_SYNC_PAYLOAD:
        raise TooLarge(f"request body of {len(raw)} bytes is over Lambda's 6 MB synchronous limit")
    try:
        oip_request = loads(raw or b"{}")
    except JsonTextError as exc:
        raise InvalidRequest(exc.message, errors=[{"pointer": exc.pointer, "message": exc.message}]) from None
    if not isinstance(oip_request, dict):
        raise InvalidRequest("an OIP request is a JSON object with inputs")
    public = to_public_request(manifest, oip_request)
    answer_id = request_id(oip_request)
    result = s.invoke.invoke(
        who,
        name,
        manifest.version,
        body=json.dumps(public).encode(),
        content_type="application/json",
        accept="application/json",
    )
    if result.status != 200:
        return _response(result)
    answer = to_oip_response(manifest, json.loads(result.body), answer_id)
    return json_response(answer, headers=result.headers)
