"""The Open Inference Protocol v2 REST surface: server metadata and health, model metadata and readiness
(default and per version), inference in JSON or with the binary tensor data extension.

Inference is the model's own invoke underneath (``services.oip`` maps the tensors), so v2 adds no second
path to a model's function. Errors are OIP's ``{"error": "..."}`` (with our ``code`` and ``message`` too).
"""

from __future__ import annotations

import contextlib
import json
from importlib import metadata

from chalice.app import Request, Response

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import Api, caller, json_response, path_int, path_name, raw_body
from chalicelib.core.errors import InvalidRequest, ModelportError, ResponseTooLarge, TooLarge
from chalicelib.core.jsontext import JsonTextError, loads
from chalicelib.core.wire import MAX_SYNC_PAYLOAD
from chalicelib.services.oip import request_id, to_oip_response, to_public_request
from chalicelib.services.oip_binary import (
    HEADER,
    binary_outputs,
    decode_request,
    encode_response,
    select_outputs,
)

EXTENSIONS = ["binary_tensor_data", "model_versions"]
ERRORS = (400, 404, 406, 409, 413, 415, 502, 504)


def oip_error(exc: ModelportError) -> Response:
    return Response(
        body=json.dumps({"error": str(exc), **exc.to_dict()}),
        status_code=exc.http_status,
        headers={"Content-Type": "application/json"},
    )


api = Api(__name__, "oip", api_key, error_response=oip_error)
blueprint = api.blueprint


def _request() -> Request:
    return blueprint.current_request


def server_version() -> str:
    try:
        return metadata.version("modelport")
    except metadata.PackageNotFoundError:  # the API's zip holds chalicelib, not the distribution
        return "0.1.0"


@api.route("/v2", summary="Open Inference Protocol server metadata", auth=False)
def server_metadata() -> Response:
    return json_response({"name": "modelport", "version": server_version(), "extensions": EXTENSIONS})


@api.route("/v2/health/live", summary="Open Inference Protocol liveness", auth=False)
def live() -> Response:
    return json_response({"live": True})


@api.route("/v2/health/ready", summary="Open Inference Protocol readiness", auth=False)
def ready() -> Response:
    return json_response({"ready": True})


def _metadata(name: str, version: int | None) -> Response:
    manifest = services().invoke.manifest(caller(_request()), path_name(name), version)
    return json_response(manifest.protocol.oip)


@api.route("/v2/models/{name}", summary="Model metadata (the default version)", errors=(404, 409))
def model_metadata(name: str) -> Response:
    return _metadata(name, None)


@api.route("/v2/models/{name}/versions/{version}", summary="Model metadata of one version", errors=(404, 409))
def version_metadata(name: str, version: str) -> Response:
    return _metadata(name, path_int(version, "version"))


def _ready(name: str, version: int | None) -> Response:
    """200 when the version can run; 409 while it deploys (or failed), 404 when there is none to see."""
    manifest = services().invoke.manifest(caller(_request()), path_name(name), version)
    return json_response({"name": manifest.name, "version": str(manifest.version), "ready": True})


@api.route("/v2/models/{name}/ready", summary="Model readiness (the default version)", errors=(404, 409))
def model_ready(name: str) -> Response:
    return _ready(name, None)


@api.route(
    "/v2/models/{name}/versions/{version}/ready", summary="Readiness of one version", errors=(404, 409)
)
def version_ready(name: str, version: str) -> Response:
    return _ready(name, path_int(version, "version"))


INFER_TYPES = ["application/json", "application/octet-stream"]


@api.route(
    "/v2/models/{name}/infer", "POST", summary="Inference (JSON or binary tensors)", errors=ERRORS,
    content_types=INFER_TYPES,
)  # fmt: skip
def model_infer(name: str) -> Response:
    return _infer(name, None)


@api.route(
    "/v2/models/{name}/versions/{version}/infer", "POST", summary="Inference with one version",
    errors=ERRORS, content_types=INFER_TYPES,
)  # fmt: skip
def version_infer(name: str, version: str) -> Response:
    return _infer(name, path_int(version, "version"))


def _infer(name: str, version: int | None) -> Response:
    request = _request()
    who = caller(request)
    s = services()
    manifest = s.invoke.manifest(who, path_name(name), version)
    raw = raw_body(request)
    if len(raw) > MAX_SYNC_PAYLOAD:
        raise TooLarge(f"request body of {len(raw)} bytes is over Lambda's 6 MB synchronous limit")
    header_length = request.headers.get(HEADER.lower())
    if header_length is not None:
        oip_request = decode_request(raw, header_length)
    else:
        try:
            oip_request = loads(raw or b"{}")
        except JsonTextError as exc:
            raise InvalidRequest(
                exc.message, errors=[{"pointer": exc.pointer, "message": exc.message}]
            ) from None
    if not isinstance(oip_request, dict):
        raise InvalidRequest("an OIP request is a JSON object with inputs")
    public = to_public_request(manifest, oip_request)
    answer_id = request_id(oip_request)
    result = s.invoke.invoke(
        who,
        manifest.name,
        manifest.version,
        body=json.dumps(public).encode(),
        content_type="application/json",
        accept="application/json",
    )
    if result.stored_url is not None:  # the v2 protocol has no answer by reference
        raise ResponseTooLarge(
            f"the model's answer is {result.size_bytes} bytes, past what one response carries",
            hint="ask for fewer outputs, or call /v1/models/{name}/invoke, which answers 303 to it",
        )
    if result.status != 200:
        message = result.body.decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            message = str(json.loads(message).get("message", message))
        return Response(
            body=json.dumps({"error": message}),
            status_code=result.status,
            headers={"Content-Type": "application/json", **result.headers},
        )
    answer = to_oip_response(manifest, json.loads(result.body), answer_id)
    select_outputs(oip_request, answer)
    # API Gateway (and Chalice) send a binary body only to a request whose Accept names its type: a client
    # that does not say so gets every output as JSON, which OIP clients read just as well.
    accepts_binary = "application/octet-stream" in request.headers.get("accept", "")
    binary = binary_outputs(oip_request, [t["name"] for t in answer["outputs"]]) if accepts_binary else set()
    if not binary:
        return json_response(answer, headers=result.headers)
    body, header = encode_response(answer, binary)
    headers: dict[str, str | list[str]] = {
        **result.headers,
        "Content-Type": "application/octet-stream",
        HEADER: str(header),
    }
    return Response(body=body, status_code=200, headers=headers)
