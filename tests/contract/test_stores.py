"""One contract for every store, run against the in-memory twins and the AWS adapters (on a moto server).

A service tested against a twin can then trust the adapter to behave the same; a difference is a bug in one
of them. Conditions and transactions are the heart of it: they are what keeps concurrent handlers honest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from chalicelib.aws.dynamodb import (
    DynamoAccountStore,
    DynamoAssociationStore,
    DynamoDeploymentStore,
    DynamoJobStore,
    DynamoModelStore,
)
from chalicelib.aws.s3 import S3ArtifactStore
from chalicelib.core.errors import ConfigError, Conflict, NotFound, TooLarge
from chalicelib.core.ports import (
    AccountStore,
    ArtifactStore,
    AssociationStore,
    DeploymentStore,
    JobStore,
    ModelStore,
    ObjectInfo,
)
from chalicelib.core.records import (
    Account,
    ApiKey,
    Deployment,
    EnvironmentImage,
    Grant,
    Job,
    ModelAssociation,
    ModelRecord,
    StageRecord,
    VersionRecord,
)
from chalicelib.memory.stores import (
    MemoryAccountStore,
    MemoryArtifactStore,
    MemoryAssociationStore,
    MemoryDeploymentStore,
    MemoryJobStore,
    MemoryModelStore,
)
from tests.conftest import Infra

T0 = "2026-01-01T00:00:00.000Z"


@dataclass
class Stores:
    kind: str
    accounts: AccountStore
    models: ModelStore
    deployments: DeploymentStore
    associations: AssociationStore
    artifacts: ArtifactStore
    jobs: JobStore


@pytest.fixture(params=["memory", pytest.param("dynamodb", marks=pytest.mark.functional)])
def backend(request: pytest.FixtureRequest) -> Iterator[Stores]:
    if request.param == "memory":
        yield Stores(
            "memory",
            MemoryAccountStore(),
            MemoryModelStore(),
            MemoryDeploymentStore(),
            MemoryAssociationStore(),
            MemoryArtifactStore(),
            MemoryJobStore(),
        )
        return
    infra = request.getfixturevalue("infra")
    settings, dynamodb = infra.settings, infra.client("dynamodb")
    yield Stores(
        "dynamodb",
        DynamoAccountStore(settings.accounts_table, dynamodb),
        DynamoModelStore(settings.models_table, dynamodb),
        DynamoDeploymentStore(settings.deployments_table, dynamodb),
        DynamoAssociationStore(settings.associations_table, dynamodb),
        S3ArtifactStore(settings.bundle_bucket, infra.client("s3")),
        DynamoJobStore(settings.jobs_table, dynamodb),
    )


def with_model(store: ModelStore, name: str = "iris", owner: str = "acct-a") -> ModelRecord:
    model = ModelRecord(name=name, owner=owner, description="Iris", created_at=T0)
    store.create_model(model)
    return model


def reserve(store: ModelStore, name: str = "iris") -> VersionRecord:
    return store.reserve_version(name, lambda n: f"uploads/{name}/v{n}.tar.gz", T0)


def make_ready(store: ModelStore, record: VersionRecord) -> VersionRecord:
    ready = record.model_copy(update={"status": "READY", "deployment_id": "d-1"})
    store.update_version(ready)
    return ready


# --------------------------------------------------------------------------- accounts, keys, grants


def test_accounts_are_created_once_and_listed_by_id(backend: Stores) -> None:
    b = Account(account_id="b", name="Bea", created_at=T0)
    a = Account(account_id="a", name="Al", is_admin=True, created_at=T0)
    backend.accounts.put_account(b)
    backend.accounts.put_account(a)
    assert backend.accounts.get_account("a") == a
    assert backend.accounts.list_accounts() == [a, b]
    with pytest.raises(Conflict):
        backend.accounts.put_account(a.model_copy(update={"name": "other"}))
    assert backend.accounts.get_account("a").name == "Al"
    with pytest.raises(NotFound):
        backend.accounts.get_account("nobody")


def test_keys_are_listed_per_account_and_revoked_once(backend: Stores) -> None:
    store = backend.accounts
    keys = [ApiKey(key_id=f"mp_{i}", account_id="a", secret_hash=f"{i}" * 64, created_at=T0) for i in (2, 1)]
    other = ApiKey(key_id="mp_9", account_id="b", secret_hash="9" * 64, created_at=T0, description="ci")
    for key in (*keys, other):
        store.put_key(key)
    with pytest.raises(Conflict):
        store.put_key(keys[0])
    assert store.get_key("mp_9") == other
    assert [k.key_id for k in store.list_keys("a")] == ["mp_1", "mp_2"]
    assert store.list_keys("nobody") == []

    revoked = store.revoke_key("mp_1", "2026-02-01T00:00:00.000Z")
    assert revoked.revoked_at == "2026-02-01T00:00:00.000Z"
    assert store.revoke_key("mp_1", "2026-03-01T00:00:00.000Z").revoked_at == revoked.revoked_at
    assert store.get_key("mp_1") == revoked
    assert store.get_key("mp_2").revoked_at is None
    with pytest.raises(NotFound):
        store.revoke_key("mp_missing", T0)
    with pytest.raises(NotFound):
        store.get_key("mp_missing")


def test_grants_are_idempotent_and_listed_both_ways(backend: Stores) -> None:
    store = backend.accounts
    first = Grant(model_name="iris", grantee="b", granted_by="a", created_at=T0)
    store.put_grant(first)
    store.put_grant(first.model_copy(update={"created_at": "2026-05-05T00:00:00.000Z"}))
    store.put_grant(Grant(model_name="iris", grantee="c", granted_by="a", created_at=T0))
    store.put_grant(Grant(model_name="digits", grantee="b", granted_by="a", created_at=T0))
    assert store.list_grants("iris") == [
        first,
        Grant(model_name="iris", grantee="c", granted_by="a", created_at=T0),
    ]
    assert store.granted_models("b") == ["digits", "iris"]
    assert store.granted_models("nobody") == []
    assert store.has_grant("iris", "b")
    assert not store.has_grant("iris", "z")

    store.delete_grant("iris", "b")
    assert not store.has_grant("iris", "b")
    assert store.granted_models("b") == ["digits"]
    with pytest.raises(NotFound):
        store.delete_grant("iris", "b")


# --------------------------------------------------------------------------- models and versions


def test_models_are_created_once_and_listed_per_owner(backend: Stores) -> None:
    store = backend.models
    iris = with_model(store)
    digits = with_model(store, "digits")
    with_model(store, "other", owner="acct-b")
    assert store.get_model("iris") == iris
    assert store.list_models("acct-a") == [digits, iris]
    assert store.list_models("nobody") == []
    with pytest.raises(Conflict):
        with_model(store, "iris", owner="acct-b")
    with pytest.raises(NotFound):
        store.get_model("missing")


def test_versions_are_numbered_one_two_three(backend: Stores) -> None:
    store = backend.models
    with_model(store)
    records = [reserve(store) for _ in range(3)]
    assert [r.version for r in records] == [1, 2, 3]
    assert records[1] == VersionRecord(
        name="iris", version=2, status="PENDING_UPLOAD", created_at=T0, upload_key="uploads/iris/v2.tar.gz"
    )
    assert store.get_model("iris").latest_version == 3
    assert store.get_version("iris", 2) == records[1]
    assert store.list_versions("iris") == records
    with pytest.raises(NotFound):
        reserve(store, "missing")
    with pytest.raises(NotFound):
        store.get_version("iris", 4)


def test_concurrent_reservations_get_distinct_consecutive_numbers(backend: Stores) -> None:
    store = backend.models
    with_model(store)
    got: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def take() -> None:
        start.wait()
        try:
            got.append(reserve(store).version)
        except BaseException as err:  # reported below, with the numbers
            errors.append(err)

    threads = [threading.Thread(target=take) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == list(range(1, 21))
    assert [v.version for v in store.list_versions("iris")] == list(range(1, 21))
    assert store.get_model("iris").latest_version == 20


def test_update_version_checks_the_expected_status(backend: Stores) -> None:
    store = backend.models
    with_model(store)
    record = reserve(store)
    deploying = record.model_copy(update={"status": "DEPLOYING", "deployment_id": "d-1"})
    store.update_version(deploying, expected_status="PENDING_UPLOAD")
    assert store.get_version("iris", 1) == deploying
    with pytest.raises(Conflict):
        store.update_version(
            deploying.model_copy(update={"status": "READY"}), expected_status="PENDING_UPLOAD"
        )
    assert store.get_version("iris", 1) == deploying
    with pytest.raises(NotFound):
        store.update_version(deploying.model_copy(update={"version": 7}))


def test_only_a_ready_version_can_be_the_default(backend: Stores) -> None:
    store = backend.models
    with_model(store)
    pending = reserve(store)
    with pytest.raises(Conflict, match="READY"):
        store.set_default_version("iris", pending.version)
    assert store.get_model("iris").default_version is None
    make_ready(store, pending)
    assert store.set_default_version("iris", 1).default_version == 1
    assert store.get_model("iris").default_version == 1
    with pytest.raises(NotFound):
        store.set_default_version("iris", 9)
    with pytest.raises(NotFound):
        store.set_default_version("missing", 1)


def test_the_default_version_cannot_be_deleted(backend: Stores) -> None:
    store = backend.models
    with_model(store)
    one, two = make_ready(store, reserve(store)), reserve(store)
    store.set_default_version("iris", one.version)
    with pytest.raises(Conflict, match="default"):
        store.delete_version("iris", 1)
    store.delete_version("iris", two.version)
    assert store.list_versions("iris") == [one]
    with pytest.raises(NotFound):
        store.delete_version("iris", 2)
    with pytest.raises(NotFound):
        store.delete_version("missing", 1)
    assert reserve(store).version == 3  # numbers are never reused


def test_a_large_manifest_round_trips(backend: Stores) -> None:
    """~300 KB of JSON: over DynamoDB's 400 KB item limit once stored raw with the rest of a version."""
    store = backend.models
    with_model(store)
    rng = random.Random(7)
    manifest = json.dumps({"weights": [round(rng.uniform(-1, 1), 6) for _ in range(33_000)]})
    assert len(manifest) > 290_000
    record = reserve(store).model_copy(update={"status": "READY", "manifest": manifest})
    store.update_version(record, expected_status="PENDING_UPLOAD")
    assert store.get_version("iris", 1) == record
    assert store.list_versions("iris") == [record]


# --------------------------------------------------------------------------- deployments


def deployment(deployment_id: str, created_at: str = T0, model: str = "iris") -> Deployment:
    return Deployment(
        deployment_id=deployment_id,
        model_name=model,
        version=1,
        source=f"s3://bundles/uploads/{model}/v1.tar.gz",
        state="RECEIVED",
        created_at=created_at,
        updated_at=created_at,
    )


def test_a_deployment_is_created_once(backend: Stores) -> None:
    store = backend.deployments
    first = deployment("d-1")
    assert store.create(first)
    assert not store.create(first.model_copy(update={"state": "FAILED"}))
    assert store.get("d-1") == first
    with pytest.raises(NotFound):
        store.get("d-404")


def test_save_bumps_the_revision_and_refuses_a_stale_one(backend: Stores) -> None:
    store = backend.deployments
    store.create(deployment("d-1"))
    read = store.get("d-1")
    stage = StageRecord(stage="RECEIVED", started_at=T0, finished_at=T0)
    saved = store.save(read.model_copy(update={"state": "INSPECTED", "stages": (stage,), "attempts": 1}))
    assert saved.revision == 1
    assert store.get("d-1") == saved
    with pytest.raises(Conflict, match="revision"):
        store.save(read.model_copy(update={"state": "FAILED", "reason": "late"}))
    assert store.get("d-1") == saved
    assert store.save(saved).revision == 2
    with pytest.raises(NotFound):
        store.save(deployment("d-404"))


def test_deployments_of_a_model_are_listed_newest_first(backend: Stores) -> None:
    store = backend.deployments
    for i, at in enumerate(
        ["2026-01-02T00:00:00.000Z", "2026-01-03T00:00:00.000Z", "2026-01-01T00:00:00.000Z"]
    ):
        store.create(deployment(f"d-{i}", at))
    store.create(deployment("d-other", model="digits"))
    assert [d.deployment_id for d in store.list_for_model("iris")] == ["d-1", "d-0", "d-2"]
    assert store.list_for_model("nothing") == []


# --------------------------------------------------------------------------- associations


def test_associations_are_put_and_read(backend: Stores) -> None:
    store = backend.associations
    assert store.get_environment_image("sha256:abc") is None
    image = EnvironmentImage(
        fingerprint="sha256:abc", image_uri="r/env:abc", image_digest="sha256:1", size_bytes=9, created_at=T0
    )
    store.put_environment_image(image)
    store.put_environment_image(image)
    assert store.get_environment_image("sha256:abc") == image
    association = ModelAssociation(
        model_name="iris",
        version=1,
        fingerprint="sha256:abc",
        image_uri="r/iris:v1",
        image_digest="sha256:2",
        size_bytes=10,
        functions=("modelport-iris",),
        created_at=T0,
    )
    store.put_model_association(association)
    assert store.get_model_association("iris", 1) == association
    replaced = association.model_copy(update={"functions": (), "state_machine_arn": "arn:aws:states:x"})
    store.put_model_association(replaced)
    assert store.get_model_association("iris", 1) == replaced
    with pytest.raises(NotFound):
        store.get_model_association("iris", 2)


# --------------------------------------------------------------------------- artifacts


def test_objects_are_put_headed_and_downloaded(backend: Stores, tmp_path: Path) -> None:
    store, data = backend.artifacts, b"bundle bytes" * 1000
    info = store.put("uploads/iris/v1.tar.gz", data)
    assert info.size_bytes == len(data)
    assert info.etag == hashlib.md5(data).hexdigest()
    assert store.head("uploads/iris/v1.tar.gz") == info
    dest = tmp_path / "bundle.tar.gz"
    assert store.download("uploads/iris/v1.tar.gz", dest, max_bytes=len(data)) == info
    assert dest.read_bytes() == data
    with pytest.raises(NotFound):
        store.head("uploads/missing")
    with pytest.raises(NotFound):
        store.download("uploads/missing", tmp_path / "missing", max_bytes=10)


def test_a_file_is_uploaded_as_put_would_store_it(backend: Stores, tmp_path: Path) -> None:
    store, source = backend.artifacts, tmp_path / "wheel.whl"
    source.write_bytes(b"wheel bytes" * 100_000)
    info = store.upload("wheels/k/wheel.whl", source)
    assert info == store.head("wheels/k/wheel.whl")
    assert info.size_bytes == source.stat().st_size
    assert info.etag == hashlib.md5(source.read_bytes()).hexdigest()
    with pytest.raises(ConfigError):
        store.upload("../escape", source)


def test_a_download_over_the_limit_is_refused(backend: Stores, tmp_path: Path) -> None:
    backend.artifacts.put("uploads/big", b"x" * 2048)
    dest = tmp_path / "big"
    with pytest.raises(TooLarge):
        backend.artifacts.download("uploads/big", dest, max_bytes=2047)
    assert not dest.exists()


def test_a_listing_gives_the_first_keys_of_a_prefix_in_byte_order_and_stops_at_the_limit(
    backend: Stores,
) -> None:
    store = backend.artifacts
    keys = ["inputs/iris/b.csv", "inputs/iris/a.csv", "inputs/iris/sub/c.jsonl", "inputs/iris/Z.csv"]
    infos = {k: store.put(k, k.encode() * 3) for k in keys}
    store.put("inputs/iris-onnx/a.csv", b"another model's")  # shares the text, not the folder
    store.put("outputs/iris/a.jsonl", b"{}")
    listed = store.list_objects("inputs/iris/", limit=10)
    assert [o.key for o in listed] == sorted(keys)  # "Z" < "a" < "b" < "sub/": by UTF-8 bytes
    for o in listed:
        assert (o.size_bytes, o.etag) == (infos[o.key].size_bytes, infos[o.key].etag)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o.last_modified), o.last_modified
        assert ObjectInfo(key=o.key, size_bytes=o.size_bytes, etag=o.etag) == store.head(o.key)
    assert [o.key for o in store.list_objects("inputs/iris/", limit=2)] == sorted(keys)[:2]
    assert store.list_objects("inputs/iris/", limit=0) == []
    assert store.list_objects("inputs/nobody/", limit=10) == []
    assert [o.key for o in store.list_objects("inputs/iris", limit=10)][:1] == ["inputs/iris-onnx/a.csv"]
    for prefix in ("", "/abs/", "inputs/../", "inputs//"):
        with pytest.raises(ConfigError):
            store.list_objects(prefix, limit=10)


def test_a_listing_past_one_page_follows_the_continuation(
    backend: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 answers at most 1,000 keys a call: the adapter pages on, asking each time only for what is still
    missing (the page size is made small here, so moto pages too)."""
    import chalicelib.aws.s3 as s3_adapter

    monkeypatch.setattr(s3_adapter, "PAGE", 3)
    keys = [f"outputs/m/{i:02d}.summary.json" for i in range(8)]
    for k in keys:
        backend.artifacts.put(k, b"{}")
    assert [o.key for o in backend.artifacts.list_objects("outputs/m/", limit=7)] == keys[:7]
    assert [o.key for o in backend.artifacts.list_objects("outputs/m/", limit=100)] == keys


@pytest.mark.functional
def test_listing_a_bucket_that_is_gone_is_not_found(infra: Infra) -> None:
    """The SDK's error in the domain's words, as for the adapter's other calls."""
    store = S3ArtifactStore(f"{infra.settings.bundle_bucket}-gone", infra.client("s3"))
    with pytest.raises(NotFound, match="-gone"):
        store.list_objects("inputs/iris/", limit=10)


@pytest.mark.parametrize("key", ["/abs", "uploads/../etc", "uploads//x", "a/./b", "bad\nkey", "", "c\\d"])
def test_unsafe_keys_are_refused(backend: Stores, key: str) -> None:
    with pytest.raises(ConfigError):
        backend.artifacts.put(key, b"x")
    with pytest.raises(ConfigError):
        backend.artifacts.presign_upload(key, max_bytes=10, expires_in=60)


def test_a_presigned_upload_names_its_key_and_size_range(backend: Stores) -> None:
    upload = backend.artifacts.presign_upload("uploads/iris/v1.tar.gz", max_bytes=1000, expires_in=300)
    assert (upload.key, upload.max_bytes, upload.expires_in) == ("uploads/iris/v1.tar.gz", 1000, 300)
    assert upload.fields["key"] == "uploads/iris/v1.tar.gz"
    if backend.kind == "memory":
        assert upload.url == "memory://uploads/iris/v1.tar.gz"
        return
    policy = json.loads(base64.b64decode(upload.fields["policy"]))
    assert ["content-length-range", 1, 1000] in policy["conditions"]
    assert {"key": "uploads/iris/v1.tar.gz"} in policy["conditions"]


@pytest.mark.functional
def test_a_presigned_post_uploads_to_s3(infra: Infra) -> None:
    """A real multipart POST, as a browser or ``curl -F`` sends it. moto does not enforce the POST policy
    (content-length-range, signature, expiry): the size limit is asserted on the policy above instead.
    """
    store = S3ArtifactStore(infra.settings.bundle_bucket, infra.client("s3"))
    upload = store.presign_upload("uploads/iris/v1.tar.gz", max_bytes=1000, expires_in=300)
    response = requests.post(upload.url, data=upload.fields, files={"file": ("b.tar.gz", b"abc")}, timeout=10)
    assert response.status_code == 204, response.text
    assert store.head("uploads/iris/v1.tar.gz").size_bytes == 3


# --------------------------------------------------------------------------- jobs


def job(job_id: str, *, account: str = "acct-a", created_at: str = T0) -> Job:
    return Job(
        job_id=job_id, account_id=account, model_name="iris", version=1, status="QUEUED",
        input_key=f"jobs/{job_id}/input", content_type="application/json", accept="application/json",
        created_at=created_at, expires_at=1_800_000_000,
    )  # fmt: skip


def test_a_job_is_created_once_and_moves_by_revision(backend: Stores) -> None:
    first = job("j-1")
    assert backend.jobs.create(first)
    assert not backend.jobs.create(first.model_copy(update={"model_name": "other"}))
    assert backend.jobs.get("j-1") == first
    running = backend.jobs.save(first.model_copy(update={"status": "RUNNING", "started_at": T0}))
    assert running.revision == 1 and backend.jobs.get("j-1") == running
    with pytest.raises(Conflict):
        backend.jobs.save(first.model_copy(update={"status": "CANCELLED"}))  # read before the run took it
    done = backend.jobs.save(
        running.model_copy(
            update={"status": "SUCCEEDED", "result_key": "jobs/j-1/result", "result_status": 200}
        )
    )
    assert backend.jobs.get("j-1") == done and done.expires_at == 1_800_000_000
    with pytest.raises(NotFound):
        backend.jobs.get("j-missing")


def test_an_accounts_jobs_are_listed_newest_first_and_only_its_own(backend: Stores) -> None:
    for i, when in enumerate(
        ["2026-01-01T00:00:01.000Z", "2026-01-01T00:00:03.000Z", "2026-01-01T00:00:02.000Z"]
    ):
        backend.jobs.create(job(f"j-{i}", created_at=when))
    backend.jobs.create(job("j-other", account="acct-b"))
    assert [j.job_id for j in backend.jobs.list_for_account("acct-a")] == ["j-1", "j-2", "j-0"]
    assert [j.job_id for j in backend.jobs.list_for_account("acct-a", limit=2)] == ["j-1", "j-2"]
    assert [j.job_id for j in backend.jobs.list_for_account("acct-b")] == ["j-other"]
    assert backend.jobs.list_for_account("acct-c") == []


def test_a_presigned_download_names_the_object(backend: Stores) -> None:
    backend.artifacts.put("jobs/j-1/result", b"the answer")
    url = backend.artifacts.presign_download("jobs/j-1/result", expires_in=600)
    assert "jobs/j-1/result" in url
    if backend.kind == "dynamodb":  # S3 on moto: the URL alone fetches it
        assert requests.get(url, timeout=10).content == b"the answer"
    with pytest.raises(ConfigError):
        backend.artifacts.presign_download("../x", expires_in=600)


def test_a_presigned_put_stores_what_the_runtime_sends(backend: Stores) -> None:
    url = backend.artifacts.presign_put("spill/r-1/reply", expires_in=600)
    assert "spill/r-1/reply" in url
    if backend.kind == "dynamodb":  # S3 on moto: what a model's function does with it
        from chalicelib.runtime import transfer

        transfer.store(url, b"a large answer" * 1000, "image/png")
        assert backend.artifacts.head("spill/r-1/reply").size_bytes == 14000
        got = transfer.fetch(backend.artifacts.presign_download("spill/r-1/reply", expires_in=60), 14000)
        assert got == b"a large answer" * 1000
        with pytest.raises(transfer.TransferError, match="over the 100"):
            transfer.fetch(backend.artifacts.presign_download("spill/r-1/reply", expires_in=60), 100)
    with pytest.raises(ConfigError):
        backend.artifacts.presign_put("../x", expires_in=600)


def test_an_accounts_webhook_secret_is_kept_by_the_first_writer(backend: Stores) -> None:
    assert backend.accounts.webhook_secret("acct-a", "whsec_first") == "whsec_first"
    assert backend.accounts.webhook_secret("acct-a", "whsec_second") == "whsec_first"
    assert backend.accounts.webhook_secret("acct-b", "whsec_other") == "whsec_other"
