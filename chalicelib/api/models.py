"""Models, versions, their config files, grants and deployments."""

from __future__ import annotations

from typing import Literal

from chalice.app import Request, Response
from pydantic import BaseModel, ConfigDict, Field

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import Api, caller, json_response, parse_body, path_int
from chalicelib.core.errors import NotFound
from chalicelib.core.ports import PresignedUpload
from chalicelib.core.records import Deployment, Grant, ModelRecord, VersionRecord

api = Api(__name__, "models", api_key)
blueprint = api.blueprint


class NewModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = Field(default="", max_length=1000)


class NewVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size_bytes: int = Field(ge=1, description="size of the bundle you will upload")
    format: Literal["tar.gz", "zip"] = "tar.gz"


class DefaultVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)


class VersionOut(BaseModel):
    name: str
    version: int
    status: str
    created_at: str
    deployment_id: str | None = None
    reason: str | None = None

    @classmethod
    def of(cls, record: VersionRecord) -> VersionOut:
        return cls.model_validate(record.model_dump(exclude={"manifest", "upload_key"}))


class CreatedVersion(BaseModel):
    version: VersionOut
    upload: PresignedUpload


def _request() -> Request:
    return blueprint.current_request


@api.route("/v1/models", summary="Models you own or were granted", response=ModelRecord, list_response=True)
def list_models() -> Response:
    return json_response(services().models.list_models(caller(_request())))


@api.route(
    "/v1/models", "POST", summary="Create a model", body=NewModel, response=ModelRecord, status=201,
    errors=(409,),
)  # fmt: skip
def create_model() -> Response:
    body = parse_body(_request(), NewModel)
    return json_response(services().models.create_model(caller(_request()), body.name, body.description), 201)


@api.route("/v1/models/{name}", summary="Get a model", response=ModelRecord, errors=(404,))
def get_model(name: str) -> Response:
    return json_response(services().models.visible(caller(_request()), name))


@api.route(
    "/v1/models/{name}/versions", "POST",
    summary="Reserve a new version and get a presigned upload for its bundle (creates the model if new)",
    body=NewVersion, response=CreatedVersion, status=201, errors=(403, 409, 413),
)  # fmt: skip
def new_version(name: str) -> Response:
    body = parse_body(_request(), NewVersion)
    record, upload = services().models.request_upload(
        caller(_request()), name, size_bytes=body.size_bytes, fmt=body.format
    )
    return json_response(CreatedVersion(version=VersionOut.of(record), upload=upload), 201)


@api.route(
    "/v1/models/{name}/versions", summary="List versions", response=VersionOut, list_response=True,
    errors=(404,),
)  # fmt: skip
def list_versions(name: str) -> Response:
    records = services().models.list_versions(caller(_request()), name)
    return json_response([VersionOut.of(r) for r in records])


@api.route(
    "/v1/models/{name}/versions/{version}", summary="Get a version", response=VersionOut, errors=(404,)
)
def get_version(name: str, version: str) -> Response:
    record = services().models.get_version(caller(_request()), name, path_int(version, "version"))
    return json_response(VersionOut.of(record))


@api.route(
    "/v1/models/{name}/versions/{version}", "DELETE", summary="Delete a version that is not the default",
    status=204, errors=(403, 404, 409),
)  # fmt: skip
def delete_version(name: str, version: str) -> Response:
    services().models.delete_version(caller(_request()), name, path_int(version, "version"))
    return Response(body="", status_code=204)


@api.route(
    "/v1/models/{name}/versions/{version}/config",
    summary="The version's model config file (YAML with Accept: application/yaml, else JSON)",
    errors=(404, 409),
)  # fmt: skip
def get_config_file(name: str, version: str) -> Response:
    doc = services().models.get_config_file(caller(_request()), name, path_int(version, "version"))
    accept: str = _request().headers.get("accept") or ""
    if "yaml" in accept:
        return Response(body=doc.to_yaml(), headers={"Content-Type": "application/yaml"})
    return Response(body=doc.to_json(), headers={"Content-Type": "application/json"})


@api.route(
    "/v1/models/{name}/default", "PUT", summary="Make a READY version the default (rollback too)",
    body=DefaultVersion, response=ModelRecord, errors=(403, 404, 409),
)  # fmt: skip
def set_default(name: str) -> Response:
    body = parse_body(_request(), DefaultVersion)
    return json_response(services().models.set_default_version(caller(_request()), name, body.version))


@api.route(
    "/v1/models/{name}/grants", summary="Accounts allowed to invoke the model", response=Grant,
    list_response=True, errors=(403, 404),
)  # fmt: skip
def list_grants(name: str) -> Response:
    return json_response(services().models.list_grants(caller(_request()), name))


@api.route(
    "/v1/models/{name}/grants/{account_id}", "PUT", summary="Let another account invoke the model",
    response=Grant, errors=(403, 404),
)  # fmt: skip
def grant(name: str, account_id: str) -> Response:
    return json_response(services().models.grant(caller(_request()), name, account_id))


@api.route(
    "/v1/models/{name}/grants/{account_id}", "DELETE", summary="Withdraw a grant", status=204,
    errors=(403, 404),
)  # fmt: skip
def revoke_grant(name: str, account_id: str) -> Response:
    services().models.revoke_grant(caller(_request()), name, account_id)
    return Response(body="", status_code=204)


@api.route(
    "/v1/models/{name}/deployments", summary="Deployments of the model, newest first", response=Deployment,
    list_response=True, errors=(404,),
)  # fmt: skip
def list_deployments(name: str) -> Response:
    services().models.visible(caller(_request()), name)
    return json_response(services().deployments.for_model(name))


@api.route(
    "/v1/deployments/{deployment_id}", summary="A deployment with its stage timings", response=Deployment,
    errors=(404,),
)  # fmt: skip
def get_deployment(deployment_id: str) -> Response:
    who, s = caller(_request()), services()
    try:
        deployment = s.deployments.get(deployment_id)
        s.models.visible(who, deployment.model_name)
    except NotFound:
        raise NotFound(f"no deployment {deployment_id!r}") from None
    return json_response(deployment)
