"""Modelport control plane: Chalice wiring only (blueprints, event handlers, the error map)."""

from __future__ import annotations

from chalice import Chalice
from chalice.app import Response, SQSEvent

from chalicelib.api import accounts, auth, console, invoke, jobs, logs, models, oip, usage
from chalicelib.api.deps import services
from chalicelib.api.http import Api, control_plane_openapi, json_response
from chalicelib.api.observe import http_middleware
from chalicelib.core.config_file import config_json_schema, manifest_json_schema
from chalicelib.core.errors import ConfigError, NotFound
from chalicelib.services.messages import received

app = Chalice(app_name="modelport")
app.register_blueprint(auth.blueprint)
app.register_blueprint(accounts.blueprint)
app.register_blueprint(models.blueprint)
app.register_blueprint(invoke.blueprint)
app.register_blueprint(oip.blueprint)
app.register_blueprint(jobs.blueprint)
app.register_blueprint(usage.blueprint)
app.register_blueprint(logs.blueprint)
app.register_blueprint(console.blueprint)
app.api.binary_types.append("image/webp")  # (application/octet-stream is one already)
app.register_middleware(http_middleware, "http")  # trace id, structured request line, EMF metrics

meta = Api(__name__, "meta")
SCHEMAS = {"model-config": manifest_json_schema, "modelport-yaml": config_json_schema}


@meta.route("/v1/health", summary="Liveness", auth=False)
def health() -> Response:
    return json_response({"status": "ok"})


@meta.route(
    "/v1/schemas/{which}", summary="JSON Schema of the model config file or modelport.yaml", auth=False,
    errors=(404,),
)  # fmt: skip
def schema(which: str) -> Response:
    if which not in SCHEMAS:
        raise NotFound(f"no schema {which!r}", hint="try " + " or ".join(SCHEMAS))
    return Response(body=SCHEMAS[which](), headers={"Content-Type": "application/schema+json"})


@meta.route("/openapi.json", summary="This document", auth=False)
def openapi() -> Response:
    return json_response(control_plane_openapi("Modelport control API", "1"))


app.register_blueprint(meta.blueprint)


# The deploy queue is consumed by the deploy worker (chalicelib.worker.handler), a container-image function
# outside Chalice: the inspectors and the image builder do not fit a zip function.


@app.on_sqs_message(queue="modelport-jobs", batch_size=1)
def on_job(event: SQSEvent) -> None:
    """The job runner: each message names a queued job (``JobService.run``)."""
    for record in event:
        services().jobs.handle_message(record.body)


@app.on_sqs_message(queue="modelport-invocations", batch_size=1)
def on_invocation(event: SQSEvent) -> None:
    """Message-driven invocations: each message a job, its completion a reply (``services/messages``)."""
    messages = services().messages
    if messages is None:
        raise ConfigError("this deployment has no outbox for message-driven invocations")
    for record in event:
        messages.handle(received(record.to_dict()))


@app.on_sqs_message(queue="modelport-deploy-dlq", batch_size=1)
def on_bundle_abandoned(event: SQSEvent) -> None:
    """Messages SQS gave up on: their deployments end FAILED with the reason, never stuck."""
    for record in event:
        services().deployments.give_up(record.body)
