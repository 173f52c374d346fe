"""The DynamoDB adapters of the record stores: one table per store, generic ``pk``/``sk`` keys, one GSI.

Every race the services can meet is settled by DynamoDB itself: conditional writes for "create if absent"
and optimistic revisions, ``TransactWriteItems`` where two items must change together (a version number and
its record; a default version and the READY status it depends on). Expected failures come back as
``Conflict``/``NotFound``; a ``ClientError`` escaping from here is an operational fault (a missing table, no
permission), not a user error. The table design and every access pattern are in ``docs/tables.md``.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel

from chalicelib.aws.outage import translates_outages
from chalicelib.core.errors import Conflict, NotFound, TooLarge
from chalicelib.core.records import (
    Account,
    ApiKey,
    Deployment,
    EnvironmentImage,
    Grant,
    Job,
    ModelAssociation,
    ModelRecord,
    VersionRecord,
)
from chalicelib.core.usage import COUNTERS, UsageDay

DynamoDBClient = Any
"""A low-level ``boto3.client("dynamodb")``; typed ``Any`` because boto3 ships no stubs (mypy-boto3 would)."""

Item = dict[str, Any]
R = TypeVar("R", bound=BaseModel)

META = "META"
GSI1 = "gsi1"


def version_sk(version: int) -> str:
    """Zero-padded so that a Query returns versions in numeric order."""
    return f"V#{version:010d}"


# --------------------------------------------------------------------------- attribute codec


def _av(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes):
        return {"B": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, list | tuple):
        return {"L": [_av(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {str(k): _av(v) for k, v in value.items()}}
    raise TypeError(f"no DynamoDB type for {type(value).__name__}")


def _py(av: dict[str, Any]) -> Any:
    ((tag, value),) = av.items()
    if tag == "N":
        number = str(value)
        return int(number) if number.lstrip("-").isdigit() else float(number)
    if tag == "L":
        return [_py(v) for v in value]
    if tag == "M":
        return {k: _py(v) for k, v in value.items()}
    if tag == "NULL":
        return None
    if tag == "B":
        return bytes(value)
    return value  # S, BOOL


def encode(record: BaseModel, **keys: str) -> Item:
    """Every field as a typed attribute (None omitted), plus the key and index attributes."""
    item = {k: _av(v) for k, v in record.model_dump(mode="json").items() if v is not None}
    item.update({k: {"S": v} for k, v in keys.items()})
    return item


def decode(cls: type[R], item: Item) -> R:
    return cls.model_validate({k: _py(v) for k, v in item.items() if k in cls.model_fields})


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _key(pk: str, sk: str) -> Item:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


# --------------------------------------------------------------------------- errors


def _code(err: Any) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _reasons(err: Any) -> list[str]:
    """The per-item codes of a cancelled transaction, in the order of its items ("None" for the good ones)."""
    return [str(r.get("Code") or "None") for r in err.response.get("CancellationReasons", [])]


def _too_large(err: Any) -> bool:
    message = str(err.response.get("Error", {}).get("Message", ""))
    return _code(err) == "ValidationException" and "size" in message.lower()


class _Table:
    """Table access shared by the stores: consistent reads, paginated queries, conditional writes."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def _get(self, key: Item) -> Item | None:
        response = self.client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        item: Item | None = response.get("Item")
        return item

    def _query(
        self, expression: str, values: Item, *, index: str | None = None, **extra: Any
    ) -> Iterator[Item]:
        """Every page of a Query: a caller never sees a truncated list."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": expression,
            "ExpressionAttributeValues": values,
            **extra,
        }
        if index:
            kwargs["IndexName"] = index
        while True:
            page = self.client.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _gsi1(self, partition: str, *, newest_first: bool = False, **extra: Any) -> Iterator[Item]:
        return self._query(
            "gsi1pk = :p", {":p": {"S": partition}}, index=GSI1, ScanIndexForward=not newest_first, **extra
        )

    def _put(self, item: Item, condition: str | None = None, **extra: Any) -> bool:
        """Write ``item``; False when ``condition`` does not hold (nothing is written then)."""
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Item": item, **extra}
        if condition:
            kwargs["ConditionExpression"] = condition
        try:
            self.client.put_item(**kwargs)
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                return False
            if _too_large(err):
                raise TooLarge(f"record too large for DynamoDB: {err.response['Error']['Message']}") from err
            raise
        return True

    def _transact(self, items: list[Item]) -> list[str] | None:
        """Run one transaction; None when it committed, else the cancellation code of each item."""
        for entry in items:
            next(iter(entry.values())).setdefault("TableName", self.table_name)
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as err:
            if _code(err) == "TransactionCanceledException":
                reasons = _reasons(err)
                if not any(
                    r not in ("None", "ConditionalCheckFailed", "TransactionConflict") for r in reasons
                ):
                    return reasons or ["TransactionConflict"]
            if _too_large(err):
                raise TooLarge(f"record too large for DynamoDB: {err.response['Error']['Message']}") from err
            raise
        return None


def _found(item: Item | None, what: str) -> Item:
    if item is None:
        raise NotFound(f"{what} does not exist")
    return item


def _concurrent(what: str) -> Conflict:
    return Conflict(f"{what} was changed concurrently", hint="retry the request")


# --------------------------------------------------------------------------- accounts, keys, grants


@translates_outages
class DynamoAccountStore(_Table):
    """``ACCOUNT#id/META``, ``KEY#key_id/META`` and ``GRANT#model/grantee`` items; GSI1 lists each kind."""

    def put_account(self, account: Account) -> None:
        item = encode(account, pk=f"ACCOUNT#{account.account_id}", sk=META, gsi1pk="ACCOUNTS")
        item["gsi1sk"] = {"S": account.account_id}
        if not self._put(item, "attribute_not_exists(pk)"):
            raise Conflict(f"account {account.account_id} exists already")

    def get_account(self, account_id: str) -> Account:
        return decode(
            Account, _found(self._get(_key(f"ACCOUNT#{account_id}", META)), f"account {account_id}")
        )

    def list_accounts(self) -> list[Account]:
        return [decode(Account, i) for i in self._gsi1("ACCOUNTS")]

    def webhook_secret(self, account_id: str, candidate: str) -> str:
        """``ACCOUNT#id/WEBHOOK``: put once (``attribute_not_exists``), then read."""
        key = _key(f"ACCOUNT#{account_id}", "WEBHOOK")
        self._put({**key, "secret": {"S": candidate}}, "attribute_not_exists(pk)")
        item = _found(self._get(key), f"webhook secret of account {account_id}")
        return str(item["secret"]["S"])

    def put_key(self, key: ApiKey) -> None:
        item = encode(key, pk=f"KEY#{key.key_id}", sk=META, gsi1pk=f"ACCOUNTKEYS#{key.account_id}")
        item["gsi1sk"] = {"S": key.key_id}
        if not self._put(item, "attribute_not_exists(pk)"):
            raise Conflict(f"API key {key.key_id} exists already")

    def get_key(self, key_id: str) -> ApiKey:
        return decode(ApiKey, _found(self._get(_key(f"KEY#{key_id}", META)), f"API key {key_id}"))

    def list_keys(self, account_id: str) -> list[ApiKey]:
        return [decode(ApiKey, i) for i in self._gsi1(f"ACCOUNTKEYS#{account_id}")]

    def revoke_key(self, key_id: str, at: str) -> ApiKey:
        """One conditional update; ``if_not_exists`` keeps the first revocation time (idempotent)."""
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(f"KEY#{key_id}", META),
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :at)",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":at": {"S": at}},
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                raise NotFound(f"API key {key_id} does not exist") from err
            raise
        return decode(ApiKey, response["Attributes"])

    def put_grant(self, grant: Grant) -> None:
        """Idempotent: the first grant (its ``granted_by`` and time) stays."""
        item = encode(
            grant, pk=f"GRANT#{grant.model_name}", sk=grant.grantee, gsi1pk=f"GRANTEE#{grant.grantee}"
        )
        item["gsi1sk"] = {"S": grant.model_name}
        self._put(item, "attribute_not_exists(pk)")

    def delete_grant(self, model_name: str, grantee: str) -> None:
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key=_key(f"GRANT#{model_name}", grantee),
                ConditionExpression="attribute_exists(pk)",
            )
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                raise NotFound(f"no grant of {model_name} to {grantee}") from err
            raise

    def list_grants(self, model_name: str) -> list[Grant]:
        return [decode(Grant, i) for i in self._query("pk = :p", {":p": {"S": f"GRANT#{model_name}"}})]

    def granted_models(self, grantee: str) -> list[str]:
        items = self._gsi1(f"GRANTEE#{grantee}", ProjectionExpression="model_name")
        return [str(i["model_name"]["S"]) for i in items]

    def has_grant(self, model_name: str, grantee: str) -> bool:
        return self._get(_key(f"GRANT#{model_name}", grantee)) is not None


# --------------------------------------------------------------------------- models and versions


@translates_outages
class DynamoModelStore(_Table):
    """``MODEL#name/META`` (GSI1 by owner) and its versions ``MODEL#name/V#0000000001`` in one partition.

    ``VersionRecord.manifest`` is kept zlib-compressed in the binary attribute ``manifest_z``: a model config
    file can reach hundreds of KB of JSON, and a DynamoDB item holds at most 400 KB.
    """

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient,
        *,
        max_attempts: int = 50,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(table_name, client)
        self.max_attempts = max_attempts
        self.sleep = sleep

    def create_model(self, model: ModelRecord) -> None:
        item = encode(model, pk=f"MODEL#{model.name}", sk=META, gsi1pk=f"OWNER#{model.owner}")
        item["gsi1sk"] = {"S": model.name}
        if not self._put(item, "attribute_not_exists(pk)"):
            raise Conflict(f"model {model.name} exists already")

    def get_model(self, name: str) -> ModelRecord:
        return decode(ModelRecord, _found(self._get(_key(f"MODEL#{name}", META)), f"model {name}"))

    def list_models(self, owner: str) -> list[ModelRecord]:
        return [decode(ModelRecord, i) for i in self._gsi1(f"OWNER#{owner}")]

    def reserve_version(self, name: str, upload_key: Callable[[int], str], at: str) -> VersionRecord:
        """Read ``latest_version``, then in one transaction move it on by one *if unchanged* and create the
        version item. A concurrent reservation cancels the transaction; we re-read and retry (with jitter), so
        concurrent callers get distinct, consecutive numbers and no number is taken without its record.
        """
        for attempt in range(self.max_attempts):
            latest = self.get_model(name).latest_version
            record = VersionRecord(
                name=name,
                version=latest + 1,
                status="PENDING_UPLOAD",
                created_at=at,
                upload_key=upload_key(latest + 1),
            )
            reasons = self._transact(
                [
                    {
                        "Update": {
                            "Key": _key(f"MODEL#{name}", META),
                            "UpdateExpression": "SET latest_version = :n",
                            "ConditionExpression": "latest_version = :latest",
                            "ExpressionAttributeValues": {":n": _n(latest + 1), ":latest": _n(latest)},
                        }
                    },
                    {
                        "Put": {
                            "Item": self._version_item(record),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
            if reasons is None:
                return record
            if reasons[:2] == ["None", "ConditionalCheckFailed"]:
                raise Conflict(
                    f"version {latest + 1} of model {name} exists, but the model's latest is {latest}"
                )
            self.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))  # noqa: S311 (jitter, not crypto)
        raise _concurrent(f"the version counter of model {name}")

    def get_version(self, name: str, version: int) -> VersionRecord:
        item = self._get(_key(f"MODEL#{name}", version_sk(version)))
        return self._version(_found(item, f"version {version} of model {name}"))

    def list_versions(self, name: str) -> list[VersionRecord]:
        items = self._query(
            "pk = :p AND begins_with(sk, :v)", {":p": {"S": f"MODEL#{name}"}, ":v": {"S": "V#"}}
        )
        return [self._version(i) for i in items]

    def update_version(self, record: VersionRecord, *, expected_status: str | None = None) -> None:
        condition, extra = "attribute_exists(pk)", {}
        if expected_status is not None:
            condition += " AND #status = :expected"
            extra = {
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":expected": {"S": expected_status}},
            }
        if not self._put(self._version_item(record), condition, **extra):
            stored = self.get_version(record.name, record.version)
            raise Conflict(
                f"version {record.version} of model {record.name} is {stored.status}, not {expected_status}"
            )

    def set_default_version(self, name: str, version: int) -> ModelRecord:
        """The READY check and the model update commit together: a version cannot turn FAILED in between."""
        reasons = self._transact(
            [
                {
                    "ConditionCheck": {
                        "Key": _key(f"MODEL#{name}", version_sk(version)),
                        "ConditionExpression": "#status = :ready",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {":ready": {"S": "READY"}},
                    }
                },
                {
                    "Update": {
                        "Key": _key(f"MODEL#{name}", META),
                        "UpdateExpression": "SET default_version = :v",
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeValues": {":v": _n(version)},
                    }
                },
            ]
        )
        if reasons is not None:
            model = self.get_model(name)  # NotFound if the model is gone
            stored = self.get_version(name, version)  # NotFound if the version is
            if stored.status != "READY":
                raise Conflict(
                    f"version {version} of model {name} is {stored.status}; "
                    "only a READY version can be the default"
                )
            raise _concurrent(f"model {model.name}")
        return self.get_model(name)

    def delete_version(self, name: str, version: int) -> None:
        """The model's default is checked in the same transaction as the delete."""
        reasons = self._transact(
            [
                {
                    "ConditionCheck": {
                        "Key": _key(f"MODEL#{name}", META),
                        "ConditionExpression": "attribute_exists(pk) AND "
                        "(attribute_not_exists(default_version) OR default_version <> :v)",
                        "ExpressionAttributeValues": {":v": _n(version)},
                    }
                },
                {
                    "Delete": {
                        "Key": _key(f"MODEL#{name}", version_sk(version)),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
        if reasons is None:
            return
        model = self.get_model(name)
        self.get_version(name, version)
        if model.default_version == version:
            raise Conflict(
                f"version {version} is the default version of model {name}; set another default first"
            )
        raise _concurrent(f"model {name}")

    @staticmethod
    def _version_item(record: VersionRecord) -> Item:
        item = encode(
            record.model_copy(update={"manifest": None}),
            pk=f"MODEL#{record.name}",
            sk=version_sk(record.version),
        )
        if record.manifest is not None:
            item["manifest_z"] = {"B": zlib.compress(record.manifest.encode(), 6)}
        return item

    @staticmethod
    def _version(item: Item) -> VersionRecord:
        record = decode(VersionRecord, item)
        if "manifest_z" in item:
            manifest = zlib.decompress(bytes(item["manifest_z"]["B"])).decode()
            record = record.model_copy(update={"manifest": manifest})
        return record


# --------------------------------------------------------------------------- deployments


@translates_outages
class DynamoDeploymentStore(_Table):
    """``DEPLOYMENT#id/META``; GSI1 ``MODEL#name`` / ``created_at#id`` lists a model's deployments."""

    def create(self, deployment: Deployment) -> bool:
        return self._put(self._item(deployment), "attribute_not_exists(pk)")

    def get(self, deployment_id: str) -> Deployment:
        item = self._get(_key(f"DEPLOYMENT#{deployment_id}", META))
        return decode(Deployment, _found(item, f"deployment {deployment_id}"))

    def save(self, deployment: Deployment) -> Deployment:
        """Optimistic concurrency: the write holds only if nobody saved since ``deployment`` was read."""
        saved = deployment.model_copy(update={"revision": deployment.revision + 1})
        if not self._put(
            self._item(saved), "revision = :r", ExpressionAttributeValues={":r": _n(deployment.revision)}
        ):
            stored = self.get(deployment.deployment_id)
            raise Conflict(
                f"deployment {stored.deployment_id} was changed concurrently "
                f"(stored revision {stored.revision}, expected {deployment.revision})"
            )
        return saved

    def list_for_model(self, model_name: str) -> list[Deployment]:
        return [decode(Deployment, i) for i in self._gsi1(f"MODEL#{model_name}", newest_first=True)]

    @staticmethod
    def _item(deployment: Deployment) -> Item:
        item = encode(deployment, pk=f"DEPLOYMENT#{deployment.deployment_id}", sk=META)
        item["gsi1pk"] = {"S": f"MODEL#{deployment.model_name}"}
        item["gsi1sk"] = {"S": f"{deployment.created_at}#{deployment.deployment_id}"}
        return item


# --------------------------------------------------------------------------- jobs


@translates_outages
class DynamoJobStore(_Table):
    """``JOB#id/META``; GSI1 ``ACCOUNT#id`` / ``created_at#job_id`` lists an account's jobs; the table's TTL
    attribute is ``expires_at``."""

    def create(self, job: Job) -> bool:
        return self._put(self._item(job), "attribute_not_exists(pk)")

    def get(self, job_id: str) -> Job:
        return decode(Job, _found(self._get(_key(f"JOB#{job_id}", META)), f"job {job_id}"))

    def save(self, job: Job) -> Job:
        saved = job.model_copy(update={"revision": job.revision + 1})
        if not self._put(
            self._item(saved), "revision = :r", ExpressionAttributeValues={":r": _n(job.revision)}
        ):
            stored = self.get(job.job_id)
            raise Conflict(
                f"job {job.job_id} was changed concurrently "
                f"(stored revision {stored.revision}, expected {job.revision})"
            )
        return saved

    def list_for_account(self, account_id: str, *, limit: int = 50) -> list[Job]:
        items = self._gsi1(f"ACCOUNT#{account_id}", newest_first=True, Limit=limit)
        return [decode(Job, item) for item in islice(items, limit)]

    @staticmethod
    def _item(job: Job) -> Item:
        item = encode(job, pk=f"JOB#{job.job_id}", sk=META)
        item["gsi1pk"] = {"S": f"ACCOUNT#{job.account_id}"}
        item["gsi1sk"] = {"S": f"{job.created_at}#{job.job_id}"}
        return item


# --------------------------------------------------------------------------- associations


@translates_outages
class DynamoAssociationStore(_Table):
    """``ENV#fingerprint/IMAGE`` (shared images) and ``MODEL#name/V#...`` (what runs one version)."""

    def put_environment_image(self, image: EnvironmentImage) -> None:
        self._put(encode(image, pk=f"ENV#{image.fingerprint}", sk="IMAGE"))

    def get_environment_image(self, fingerprint: str) -> EnvironmentImage | None:
        item = self._get(_key(f"ENV#{fingerprint}", "IMAGE"))
        return None if item is None else decode(EnvironmentImage, item)

    def put_model_association(self, association: ModelAssociation) -> None:
        sk = version_sk(association.version)
        self._put(encode(association, pk=f"MODEL#{association.model_name}", sk=sk))

    def get_model_association(self, model_name: str, version: int) -> ModelAssociation:
        item = self._get(_key(f"MODEL#{model_name}", version_sk(version)))
        return decode(
            ModelAssociation, _found(item, f"association of version {version} of model {model_name}")
        )


# --------------------------------------------------------------------------- usage

LATENCY_PREFIX = "lat"


def usage_sk(day: str, model: str) -> str:
    """Day first: a date range is one key range of the account's partition, every model in it."""
    return f"DAY#{day}#MODEL#{model}"


@translates_outages
class DynamoUsageStore(_Table):
    """``ACCOUNT#id`` / ``DAY#yyyy-mm-dd#MODEL#name``: counters and ``lat<bucket>`` latency counts, each
    write one UpdateItem whose ``ADD`` DynamoDB applies atomically (no read, no condition, no lost count)."""

    def add(self, deltas: Sequence[UsageDay]) -> None:
        for delta in deltas:
            numbers = {c: getattr(delta, c) for c in COUNTERS if getattr(delta, c)}
            numbers.update({f"{LATENCY_PREFIX}{b}": n for b, n in delta.latency.items() if n})
            if not numbers:
                continue
            names = {f"#n{i}": name for i, name in enumerate(numbers)}
            names.update({"#account": "account_id", "#model": "model", "#day": "day"})
            values = {f":n{i}": _n(value) for i, value in enumerate(numbers.values())}
            values.update(
                {":account": {"S": delta.account_id}, ":model": {"S": delta.model}, ":day": {"S": delta.day}}
            )
            adds = ", ".join(f"#n{i} :n{i}" for i in range(len(numbers)))
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(f"ACCOUNT#{delta.account_id}", usage_sk(delta.day, delta.model)),
                UpdateExpression=f"SET #account = :account, #model = :model, #day = :day ADD {adds}",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

    def query(
        self, account_id: str, first_day: str, last_day: str, *, model: str | None = None
    ) -> list[UsageDay]:
        values = {
            ":pk": {"S": f"ACCOUNT#{account_id}"},
            ":low": {"S": f"DAY#{first_day}#"},
            ":high": {"S": f"DAY#{last_day}#~"},  # "~" sorts after every character of a model name
        }
        items = self._query("pk = :pk AND sk BETWEEN :low AND :high", values, ConsistentRead=True)
        found = [self._day(item) for item in items]
        return [d for d in found if model is None or d.model == model]

    @staticmethod
    def _day(item: Item) -> UsageDay:
        data = {k: _py(v) for k, v in item.items()}
        latency = {
            int(k.removeprefix(LATENCY_PREFIX)): int(v)
            for k, v in data.items()
            if k.startswith(LATENCY_PREFIX) and k.removeprefix(LATENCY_PREFIX).isdigit()
        }
        fields = {k: data[k] for k in ("account_id", "model", "day", *COUNTERS) if k in data}
        return UsageDay.model_validate({**fields, "latency": latency})
