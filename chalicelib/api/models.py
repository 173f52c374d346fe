"""Models, versions, their config files, grants and deployments."""

from __future__ import annotations

import json
import re
from typing import Literal

import yaml
from chalice.app import Request, Response
from pydantic import BaseModel, ConfigDict, Field

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import Api, caller, json_response, parse_body, path_int
from chalicelib.core.errors import NotFound
from chalicelib.core.ports import PresignedUpload
from chalicelib.core.records import Account, Deployment, Grant, ModelRecord, VersionRecord
from chalicelib.core.wire import negotiate
from chalicelib.services.models import no_deployment

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


DEPLOYMENT_ID = re.compile(r"^[0-9a-f]{32}$")
OWNERS_ONLY = "owners and admins only (null for a grantee)"


class ModelOut(BaseModel):
    """A model as the caller may see it: a grantee gets its public face, the owner everything."""

    name: str
    description: str = ""
    default_version: int | None = None
    owner: str | None = Field(default=None, description=OWNERS_ONLY)
    latest_version: int | None = Field(default=None, description=OWNERS_ONLY)
    created_at: str | None = Field(default=None, description=OWNERS_ONLY)

    @classmethod
    def of(cls, model: ModelRecord, who: Account) -> ModelOut:
        if services().models.is_owner(who, model):
            return cls.model_validate(model.model_dump())
        return cls(name=model.name, description=model.description, default_version=model.default_version)


class VersionOut(BaseModel):
    name: str
    version: int
    status: str
    created_at: str
    deployment_id: str | None = Field(default=None, description=OWNERS_ONLY)
    reason: str | None = Field(default=None, description=OWNERS_ONLY)

    @classmethod
    def of(cls, record: VersionRecord, *, owner: bool = True) -> VersionOut:
        hidden = {"manifest", "upload_key"} | (set() if owner else {"deployment_id", "reason"})
        return cls.model_validate(record.model_dump(exclude=hidden))


class CreatedVersion(BaseModel):
    version: VersionOut
    upload: PresignedUpload


def _request() -> Request:
    return blueprint.current_request


@api.route("/v1/models", summary="Models you own or were granted", response=ModelOut, list_response=True)
def list_models() -> Response:
    who = caller(_request())
    return json_response([ModelOut.of(m, who) for m in services().models.list_models(who)])


@api.route(
    "/v1/models", "POST", summary="Create a model", body=NewModel, response=ModelOut, status=201,
    errors=(409,),
)  # fmt: skip
def create_model() -> Response:
    body = parse_body(_request(), NewModel)
    who = caller(_request())
    return json_response(
        ModelOut.of(services().models.create_model(who, body.name, body.description), who), 201
    )


@api.route("/v1/models/{name}", summary="Get a model", response=ModelOut, errors=(404,))
def get_model(name: str) -> Response:
    who = caller(_request())
    return json_response(ModelOut.of(services().models.visible(who, name), who))


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
    who, models = caller(_request()), services().models
    owner = models.is_owner(who, models.visible(who, name))
    return json_response([VersionOut.of(r, owner=owner) for r in models.list_versions(who, name)])


@api.route(
    "/v1/models/{name}/versions/{version}", summary="Get a version", response=VersionOut, errors=(404,)
)
def get_version(name: str, version: str) -> Response:
    who, models, number = caller(_request()), services().models, path_int(version, "version")
    owner = models.is_owner(who, models.visible(who, name))
    return json_response(VersionOut.of(models.get_version(who, name, number), owner=owner))


@api.route(
    "/v1/models/{name}/versions/{version}", "DELETE", summary="Delete a version that is not the default",
    status=204, errors=(403, 404, 409),
)  # fmt: skip
def delete_version(name: str, version: str) -> Response:
    services().models.delete_version(caller(_request()), name, path_int(version, "version"))
    return Response(body="", status_code=204)


CONFIG_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")
"""The model config file's forms, JSON first (negotiated as invocations are)."""


@api.route(
    "/v1/models/{name}/versions/{version}/config",
    summary="The version's model config file (YAML with Accept: application/yaml, else JSON); a grantee "
    "reads its public part: name, version, description, native, labels, protocol",
    errors=(404, 409),
)  # fmt: skip
def get_config_file(name: str, version: str) -> Response:
    doc, fields = services().models.config_file(caller(_request()), name, path_int(version, "version"))
    chosen = negotiate(_request().headers.get("accept"), CONFIG_TYPES)
    yaml_wanted = chosen is not None and "yaml" in chosen  # nothing acceptable: JSON, as before
    if fields is None:  # the owner: the file itself
        text = doc.to_yaml() if yaml_wanted else doc.to_json()
    else:
        data = {k: v for k, v in doc.to_data().items() if k in fields}
        text = (
            yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
            if yaml_wanted
            else json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        )
    return Response(
        body=text, headers={"Content-Type": "application/yaml" if yaml_wanted else "application/json"}
    )


@api.route(
    "/v1/models/{name}/default", "PUT", summary="Make a READY version the default (rollback too)",
    body=DefaultVersion, response=ModelOut, errors=(403, 404, 409),
)  # fmt: skip
def set_default(name: str) -> Response:
    body = parse_body(_request(), DefaultVersion)
    who = caller(_request())
    return json_response(ModelOut.of(services().models.set_default_version(who, name, body.version), who))


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
    "/v1/models/{name}/deployments", summary="Deployments of the model, newest first (owners only)",
    response=Deployment, list_response=True, errors=(404,),
)  # fmt: skip
def list_deployments(name: str) -> Response:
    services().models.owned_view(caller(_request()), name)
    return json_response(services().deployments.for_model(name))


@api.route(
    "/v1/deployments/{deployment_id}", summary="A deployment with its stage timings (owners only)",
    response=Deployment, errors=(404,),
)  # fmt: skip
def get_deployment(deployment_id: str) -> Response:
    """Unknown, malformed, another account's or a granted model's: one 404, the same bytes."""
    who, s = caller(_request()), services()
    if not DEPLOYMENT_ID.fullmatch(deployment_id):
        raise no_deployment()
    try:
        deployment = s.deployments.get(deployment_id)
        s.models.owned_view(who, deployment.model_name)
    except NotFound:
        raise no_deployment() from None
    return json_response(deployment)
