"""Invocations in the model's own protocol (v1), and each model's OpenAPI (Open Inference Protocol v2:
``api/oip.py``)."""

from __future__ import annotations

import time

from chalice.app import Request, Response

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import (
    BODY_TYPES,
    INPUT_QUERY,
    Api,
    caller,
    json_response,
    path_int,
    path_name,
    query_param,
    raw_body,
)
from chalicelib.core.errors import Conflict, FunctionFailed, InvalidRequest
from chalicelib.core.openapi import openapi_document
from chalicelib.core.pipeline import API_DEADLINE_S, longest_call_s
from chalicelib.services.invoke import InvokeResult

api = Api(__name__, "invoke", api_key)
blueprint = api.blueprint

ERRORS = (202, 303, 400, 404, 406, 409, 413, 415, 502, 504)


def _request() -> Request:
    return blueprint.current_request


def _invoke(name: str, version: int | None) -> Response:
    began = time.monotonic()
    request = _request()
    if "respond-async" in request.headers.get("prefer", "").lower():
        from chalicelib.api.jobs import submit

        return submit(request, name, version)
    s, who = services(), caller(request)
    if longest_call_s(s.invoke.manifest(who, path_name(name), version)) > API_DEADLINE_S:
        return _within_deadline(request, name, version, began)
    input_url = query_param(request, "input_url")
    reference = None
    body = raw_body(request)
    if isinstance(input_url, str):
        if s.invoke.payloads is None or body:
            raise InvalidRequest("send either a body or an input_url (of this deployment's data bucket)")
        reference = s.invoke.payloads.resolve(who, input_url)
    result = s.invoke.invoke(
        who,
        path_name(name),
        version,
        body=body,
        content_type=request.headers.get("content-type"),
        accept=request.headers.get("accept"),
        reference=reference,
    )
    return _response(result)


def _within_deadline(request: Request, name: str, version: int | None, began: float) -> Response:
    """A call that may outlive API Gateway's 29 s runs as a job: its answer if it ends in time, as the
    synchronous call would give it, else the job's 202 + Location to follow (never a gateway timeout)."""
    from chalicelib.api.jobs import accepted, submitted

    jobs = services().jobs
    job = jobs.wait(caller(request), submitted(request, name, version).job_id, until=began + jobs.sync_wait_s)
    answer = jobs.answer(job) if job.status == "SUCCEEDED" or job.status == "FAILED" else None
    if answer is not None:
        return _response(answer)
    if job.status == "FAILED":
        raise FunctionFailed(job.error or "the model's function failed")
    if job.status == "CANCELLED":
        raise Conflict(f"job {job.job_id} was cancelled before it ran")
    return accepted(job, asked=False)


def _response(result: InvokeResult) -> Response:
    if result.stored_url is not None:  # past the 6 MB an answer carries: where it is (RFC 9110 15.4.4)
        return stored_response(result)
    body: bytes | str = result.body
    if result.content_type in ("application/json", "text/csv") or result.content_type.startswith("text/"):
        body = result.body.decode()
    return Response(
        body=body,
        status_code=result.status,
        headers={"Content-Type": result.content_type, **result.headers},
    )


def stored_response(result: InvokeResult) -> Response:
    """303 See Other to the stored answer; HTTP clients follow it (without the caller's credentials, as
    the URL is for another host), others read the document."""
    assert result.stored_url is not None
    doc = {
        "status": result.status,
        "content_type": result.content_type,
        "size_bytes": result.size_bytes,
        "url": result.stored_url,
    }
    return json_response(doc, status=303, headers={"Location": result.stored_url, **result.headers})


@api.route(
    "/v1/models/{name}/invoke", "POST", summary="Invoke the default version, per the model's protocol",
    errors=ERRORS, content_types=BODY_TYPES, query=INPUT_QUERY,
)  # fmt: skip
def invoke(name: str) -> Response:
    return _invoke(name, None)


@api.route(
    "/v1/models/{name}/versions/{version}/invoke", "POST", summary="Invoke one version", errors=ERRORS,
    content_types=BODY_TYPES, query=INPUT_QUERY,
)  # fmt: skip
def invoke_version(name: str, version: str) -> Response:
    return _invoke(name, path_int(version, "version"))


@api.route(
    "/v1/models/{name}/openapi.json", summary="OpenAPI 3.1 of the model's invoke endpoints", errors=(404, 409)
)
def model_openapi(name: str) -> Response:
    manifest = services().invoke.manifest(caller(_request()), path_name(name), None)
    return json_response(openapi_document(manifest))
