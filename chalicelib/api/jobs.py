"""Asynchronous jobs: submit (``POST /v1/models/{name}/jobs``, or ``Prefer: respond-async`` on an invoke
route; ``?webhook=URL`` to be called when it ends; ``?input_url=s3://...`` for an upload made with
``POST /v1/uploads``, up to 1 GiB), follow (``GET /v1/jobs/{id}``), list, cancel a queued one
(``DELETE``); the account's webhook secret; what became of a model's event-driven batch inputs."""

from __future__ import annotations

from chalice.app import Request, Response

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import (
    BODY_TYPES,
    INPUT_QUERY,
    Api,
    Query,
    bounded,
    caller,
    json_response,
    path_int,
    path_name,
    query_param,
    raw_body,
)
from chalicelib.core.errors import InvalidRequest
from chalicelib.core.records import Job
from chalicelib.services.batch_runs import BatchRunList, parse_limit
from chalicelib.services.jobs import JobView

api = Api(__name__, "jobs", api_key)
blueprint = api.blueprint

ERRORS = (400, 404, 406, 409, 413, 415)


def accepted(job: Job, *, asked: bool = True) -> Response:
    """202 with the job's place: what a submit answers (``asked``: the caller preferred it)."""
    headers = {"Location": f"/v1/jobs/{job.job_id}"}
    if asked:
        headers["Preference-Applied"] = "respond-async"
    return json_response(JobView(job).document(), status=202, headers=headers)


def submit(request: Request, name: str, version: int | None) -> Response:
    return accepted(submitted(request, name, version))


def submitted(request: Request, name: str, version: int | None) -> Job:
    """The job of ``request`` (a call's body or ``?input_url=``; ``?webhook=``), queued."""
    return services().jobs.submit(
        caller(request),
        path_name(name),
        version,
        body=raw_body(request),
        content_type=request.headers.get("content-type"),
        accept=request.headers.get("accept"),
        webhook_url=query_param(request, "webhook"),
        input_url=query_param(request, "input_url"),
    )


@api.route(
    "/v1/uploads", "POST", summary="A presigned upload for an input past the API's limits (to ?input_url=)",
    status=201, errors=(400,),
)  # fmt: skip
def new_upload() -> Response:
    s = services()
    if s.invoke.payloads is None:
        raise InvalidRequest("this deployment takes no inputs by reference")
    return json_response(s.invoke.payloads.new_upload(caller(blueprint.current_request)), status=201)


@api.route(
    "/v1/models/{name}/jobs", "POST", summary="Run the default version asynchronously (202 + Location)",
    status=202, errors=ERRORS, content_types=BODY_TYPES, query=INPUT_QUERY,
)  # fmt: skip
def submit_job(name: str) -> Response:
    return submit(blueprint.current_request, name, None)


@api.route(
    "/v1/models/{name}/versions/{version}/jobs", "POST", summary="Run one version asynchronously",
    status=202, errors=ERRORS, content_types=BODY_TYPES, query=INPUT_QUERY,
)  # fmt: skip
def submit_version_job(name: str, version: str) -> Response:
    return submit(blueprint.current_request, name, path_int(version, "version"))


@api.route("/v1/jobs", summary="This account's newest jobs")
def list_jobs() -> Response:
    jobs = services().jobs.list(caller(blueprint.current_request))
    return json_response({"jobs": [JobView(j).document() for j in jobs]})


@api.route("/v1/jobs/{job_id}", summary="A job's status and, once done, its answer", errors=(404,))
def get_job(job_id: str) -> Response:
    view = services().jobs.get(caller(blueprint.current_request), job_id)
    return json_response(view.document())


@api.route("/v1/jobs/{job_id}", "DELETE", summary="Cancel a queued job", errors=(404, 409))
def cancel_job(job_id: str) -> Response:
    job = services().jobs.cancel(caller(blueprint.current_request), job_id)
    return json_response(JobView(job).document())


@api.route(
    "/v1/webhook-secret", summary="This account's secret for verifying job webhooks (Standard Webhooks)"
)
def webhook_secret() -> Response:
    secret = services().jobs.webhook_secret(caller(blueprint.current_request))
    return json_response({"secret": secret, "scheme": "https://www.standardwebhooks.com"})


@api.route(
    "/v1/models/{name}/batches",
    summary="The model's event-driven batch runs (inputs/<model>/ of the data bucket), newest first, "
    "?limit=1..100 (default 50), with a presigned download of each finished run's results (owners only)",
    response=BatchRunList, errors=(400, 404),
    query=(Query("limit", "the newest runs (default 50)", bounded("integer", 1, 100)),),
)  # fmt: skip
def list_batches(name: str) -> Response:
    request = blueprint.current_request
    limit = parse_limit(query_param(request, "limit"))
    return json_response(services().batches.for_model(caller(request), path_name(name), limit=limit))
