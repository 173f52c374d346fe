"""Models, versions and grants, as an account sees them.

Visibility is one rule: an account sees the models it owns and the ones granted to it (admins see all).
Anything else is answered exactly like a model that does not exist, so names of private models don't leak
through the invoke, read or version endpoints. Every miss of one kind (model, version, deployment, grant,
account) is one fixed error that does not echo the id: the bodies for "does not exist" and "is another
account's" are byte-identical. A grantee sees what invoking needs (``public_config``); what runs the
model (functions, images, deployment records) is the owner's.
"""

from __future__ import annotations

from typing import Literal

from chalicelib.core.config import RESERVED_PREFIXES, SLUG, reserved_name
from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.errors import Conflict, Forbidden, InvalidRequest, NotFound, TooLarge
from chalicelib.core.ports import (
    AccountStore,
    ArtifactStore,
    Clock,
    FunctionManager,
    ModelStore,
    PresignedUpload,
)
from chalicelib.core.records import Account, Grant, ModelRecord, VersionRecord
from chalicelib.services.accounts import no_account
from chalicelib.services.deployments import mb, upload_key

BundleFormat = Literal["tar.gz", "zip"]

PUBLIC_CONFIG_FIELDS = frozenset(
    {"schema_version", "name", "version", "description", "native", "labels", "protocol"}
)
"""What of a config file a grantee reads: the contract it invokes, nothing of the owner's artifact,
environment, steps, image or functions."""


def no_model() -> NotFound:
    return NotFound("no such model", hint="list the models you may see: GET /v1/models")


def no_version() -> NotFound:
    return NotFound("no such version", hint="list the versions: GET /v1/models/{name}/versions")


def no_deployment() -> NotFound:
    return NotFound("no such deployment")


def no_grant() -> NotFound:
    return NotFound("no such grant")


class ModelService:
    def __init__(
        self,
        models: ModelStore,
        accounts: AccountStore,
        artifacts: ArtifactStore,
        clock: Clock,
        *,
        max_bundle_bytes: int,
        upload_expires_s: int,
        functions: FunctionManager | None = None,
    ) -> None:
        self.models = models
        self.accounts = accounts
        self.artifacts = artifacts
        self.clock = clock
        self.max_bundle_bytes = max_bundle_bytes
        self.upload_expires_s = upload_expires_s
        self.functions = functions
        self.generation = 0
        """Bumped by every change that alters what an account may invoke (defaults, grants, versions),
        so caches keyed by it (``InvokeService``) never serve what this process just changed."""

    # ------------------------------------------------------------------ visibility

    def visible(self, caller: Account, name: str) -> ModelRecord:
        if not SLUG.fullmatch(name):  # no model has such a name: the store is not asked
            raise no_model()
        try:
            model = self.models.get_model(name)
        except NotFound:
            raise no_model() from None
        if self.is_owner(caller, model) or self.accounts.has_grant(name, caller.account_id):
            return model
        raise no_model()

    @staticmethod
    def is_owner(caller: Account, model: ModelRecord) -> bool:
        """Owners and admins see everything of a model; grantees its public face."""
        return model.owner == caller.account_id or caller.is_admin

    def owned_view(self, caller: Account, name: str) -> ModelRecord:
        """A model only its owner may look into (its deployments): anyone else gets the plain 404."""
        model = self.visible(caller, name)
        if not self.is_owner(caller, model):
            raise no_model()
        return model

    def owned(self, caller: Account, name: str) -> ModelRecord:
        model = self.visible(caller, name)
        if not self.is_owner(caller, model):
            raise Forbidden(f"only the owner of {name!r} can change it")
        return model

    # ------------------------------------------------------------------ models

    def create_model(self, caller: Account, name: str, description: str = "") -> ModelRecord:
        if not SLUG.fullmatch(name):
            raise InvalidRequest(
                f"{name!r} is not a model name: use 1-48 lowercase letters, digits and '-'",
                errors=[{"pointer": "/name", "message": "not a slug"}],
            )
        if reserved_name(name):
            raise InvalidRequest(
                f"{name!r} is reserved: model names may not start with " + ", ".join(RESERVED_PREFIXES),
                errors=[{"pointer": "/name", "message": "reserved"}],
                hint="choose another name",
            )
        model = ModelRecord(
            name=name, owner=caller.account_id, description=description, created_at=self.clock()
        )
        try:
            self.models.create_model(model)
        except Conflict:
            raise Conflict(f"a model named {name!r} exists", hint="choose another name") from None
        return model

    def list_models(self, caller: Account) -> list[ModelRecord]:
        own = self.models.list_models(caller.account_id)
        names = {m.name for m in own}
        granted = [
            self.models.get_model(n)
            for n in self.accounts.granted_models(caller.account_id)
            if n not in names
        ]
        return sorted(own + granted, key=lambda m: m.name)

    # ------------------------------------------------------------------ versions

    def request_upload(
        self, caller: Account, name: str, *, size_bytes: int, fmt: BundleFormat = "tar.gz"
    ) -> tuple[VersionRecord, PresignedUpload]:
        """Reserve the next version and hand out a presigned upload for its bundle."""
        if size_bytes > self.max_bundle_bytes:
            raise TooLarge(
                f"bundle is {mb(size_bytes)}, over the {mb(self.max_bundle_bytes)} limit",
                hint="leave training data and caches out of the bundle",
            )
        try:
            self.owned(caller, name)
        except NotFound:
            self.create_model(caller, name)
        record = self.models.reserve_version(name, lambda v: upload_key(name, v, fmt), self.clock())
        upload = self.artifacts.presign_upload(
            record.upload_key, max_bytes=self.max_bundle_bytes, expires_in=self.upload_expires_s
        )
        return record, upload

    def list_versions(self, caller: Account, name: str) -> list[VersionRecord]:
        self.visible(caller, name)
        return self.models.list_versions(name)

    def get_version(self, caller: Account, name: str, version: int) -> VersionRecord:
        self.visible(caller, name)
        try:
            return self.models.get_version(name, version)
        except NotFound:
            raise no_version() from None

    def resolve_version(self, caller: Account, name: str, version: int | None) -> VersionRecord:
        """A given version, or the default one."""
        model = self.visible(caller, name)
        if version is None:
            if model.default_version is None:
                raise NotFound(f"model {name!r} has no ready version yet")
            version = model.default_version
        return self.get_version(caller, name, version)

    def config_file(
        self, caller: Account, name: str, version: int
    ) -> tuple[ModelConfigFile, frozenset[str] | None]:
        """The version's config file and the fields ``caller`` may read of it: None (all) for its owner,
        ``PUBLIC_CONFIG_FIELDS`` for a grantee."""
        model = self.visible(caller, name)
        owner = self.is_owner(caller, model)
        record = self.get_version(caller, name, version)
        if record.manifest is None:  # why it failed is the owner's business (it may quote the bundle)
            why = f" ({record.reason})" if owner and record.reason else ""
            raise Conflict(f"version {version} of {name!r} has no config file: it is {record.status}{why}")
        return ModelConfigFile.model_validate_json(record.manifest), None if owner else PUBLIC_CONFIG_FIELDS

    def set_default_version(self, caller: Account, name: str, version: int) -> ModelRecord:
        self.owned(caller, name)
        record = self.get_version(caller, name, version)
        if record.status != "READY":
            raise Conflict(f"version {version} of {name!r} is {record.status}, not READY")
        model = self.models.set_default_version(name, version)
        self.generation += 1
        if self.functions is not None and record.manifest:  # move the `live` alias with it
            deployed = ModelConfigFile.model_validate_json(record.manifest).deployment
            if deployed is not None:
                self.functions.promote(deployed)
        return model

    def delete_version(self, caller: Account, name: str, version: int) -> None:
        model = self.owned(caller, name)
        record = self.get_version(caller, name, version)
        if model.default_version == version:
            raise Conflict(
                f"version {version} is the default of {name!r}",
                hint="make another version the default first",
            )
        if self.functions is not None and record.manifest:  # what runs it goes first: a retry finishes
            deployed = ModelConfigFile.model_validate_json(record.manifest).deployment
            if deployed is not None:
                self.functions.retire(deployed)
        self.models.delete_version(name, version)
        self.generation += 1

    # ------------------------------------------------------------------ grants

    def grant(self, caller: Account, name: str, grantee: str) -> Grant:
        self.owned(caller, name)
        try:
            self.accounts.get_account(grantee)
        except NotFound:
            raise no_account() from None
        grant = Grant(model_name=name, grantee=grantee, granted_by=caller.account_id, created_at=self.clock())
        self.accounts.put_grant(grant)
        return grant

    def revoke_grant(self, caller: Account, name: str, grantee: str) -> None:
        self.owned(caller, name)
        try:
            self.accounts.delete_grant(name, grantee)
        except NotFound:
            raise no_grant() from None
        self.generation += 1

    def list_grants(self, caller: Account, name: str) -> list[Grant]:
        self.owned(caller, name)
        return self.accounts.list_grants(name)
