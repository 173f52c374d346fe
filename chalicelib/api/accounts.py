"""Accounts and API keys."""

from __future__ import annotations

from chalice.app import Response
from pydantic import BaseModel, ConfigDict, Field

from chalicelib.api.auth import api_key
from chalicelib.api.deps import services
from chalicelib.api.http import Api, caller, json_response, parse_body
from chalicelib.core.records import Account, ApiKey

api = Api(__name__, "accounts", api_key)
blueprint = api.blueprint


class NewAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    is_admin: bool = False


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field(default="", max_length=200)


class KeyOut(BaseModel):
    key_id: str
    account_id: str
    created_at: str
    revoked_at: str | None = None
    description: str = ""

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls.model_validate(key.model_dump(exclude={"secret_hash"}))


class CreatedAccount(BaseModel):
    account: Account
    api_key: str = Field(description="shown once; only its hash is kept")


class CreatedKey(BaseModel):
    key: KeyOut
    api_key: str = Field(description="shown once; only its hash is kept")


@api.route(
    "/v1/accounts", "POST", summary="Create an account (admin)", body=NewAccount,
    response=CreatedAccount, status=201, errors=(403,),
)  # fmt: skip
def create_account() -> Response:
    body = parse_body(blueprint.current_request, NewAccount)
    account, token = services().accounts.create_account(
        caller(blueprint.current_request), body.name, is_admin=body.is_admin
    )
    return json_response(CreatedAccount(account=account, api_key=token), 201)


@api.route(
    "/v1/accounts", summary="List accounts (admin)", response=Account, list_response=True, errors=(403,)
)
def list_accounts() -> Response:
    return json_response(services().accounts.list_accounts(caller(blueprint.current_request)))


@api.route("/v1/accounts/me", summary="The calling account", response=Account)
def me() -> Response:
    return json_response(caller(blueprint.current_request))


@api.route("/v1/accounts/{account_id}", summary="Get an account", response=Account, errors=(404,))
def get_account(account_id: str) -> Response:
    return json_response(services().accounts.get_account(caller(blueprint.current_request), account_id))


@api.route(
    "/v1/accounts/{account_id}/keys", "POST", summary="Issue an API key", body=NewKey,
    response=CreatedKey, status=201, errors=(404,),
)  # fmt: skip
def issue_key(account_id: str) -> Response:
    body = parse_body(blueprint.current_request, NewKey)
    token, key = services().accounts.issue_key(
        caller(blueprint.current_request), account_id, description=body.description
    )
    return json_response(CreatedKey(key=KeyOut.of(key), api_key=token), 201)


@api.route(
    "/v1/accounts/{account_id}/keys", summary="List an account's keys", response=KeyOut,
    list_response=True, errors=(404,),
)  # fmt: skip
def list_keys(account_id: str) -> Response:
    keys = services().accounts.list_keys(caller(blueprint.current_request), account_id)
    return json_response([KeyOut.of(k) for k in keys])


@api.route("/v1/keys/{key_id}", "DELETE", summary="Revoke an API key", response=KeyOut, errors=(404,))
def revoke_key(key_id: str) -> Response:
    key = services().accounts.revoke_key(caller(blueprint.current_request), key_id)
    return json_response(KeyOut.of(key))
