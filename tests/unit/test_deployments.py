"""The deployment plan against the in-memory twins: stages, idempotency, resumption, fixable failures."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import threading
import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.errors import Conflict, Unavailable
from chalicelib.core.records import DEPLOYMENT_STAGES, Deployment, ModelRecord
from chalicelib.memory.stores import MemoryFunctionManager, MemoryImageBuilder
from chalicelib.services.deployments import (
    DeploymentBusy,
    deployment_id,
    parse_upload_key,
    upload_key,
)
from chalicelib.services.events import s3_records
from chalicelib.settings import Settings
from chalicelib.wiring import Container, deployment_service, memory_container

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris-onnx"
EVENTS = Path(__file__).resolve().parents[1] / "events"
BUCKET = Settings().bundle_bucket
NAME = "iris-onnx"


class FakeClock:
    """Advances one second per reading, so every timestamp is distinct and ordered."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)

    def __call__(self) -> str:
        self.now += timedelta(seconds=1)
        return self.now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Killed(BaseException):
    """Stands in for a handler killed mid-stage (Lambda timeout, OOM): nothing gets to record it."""


Event = tuple[str, str, str, int]


class World:
    def __init__(self, tmp_path: Path, settings: Settings | None = None) -> None:
        self.clock = FakeClock()
        self.c: Container = memory_container(settings, clock=self.clock)
        self.scratch = tmp_path / "scratch"
        self.scratch.mkdir()
        self.service = deployment_service(self.c, scratch=self.scratch)

    @property
    def images(self) -> MemoryImageBuilder:
        assert isinstance(self.c.images, MemoryImageBuilder)
        return self.c.images

    @property
    def functions(self) -> MemoryFunctionManager:
        assert isinstance(self.c.functions, MemoryFunctionManager)
        return self.c.functions

    def upload(self, data: bytes, name: str = NAME, fmt: str = "tar.gz") -> Event:
        """Reserve the next version of ``name`` and put ``data`` where its upload lands."""
        with contextlib.suppress(Conflict):  # the model exists already
            self.c.models.create_model(ModelRecord(name=name, owner="acct-1", created_at=self.clock()))
        version = self.c.models.reserve_version(name, lambda v: upload_key(name, v, fmt), self.clock())
        info = self.c.artifacts.put(version.upload_key, data)
        return BUCKET, version.upload_key, info.etag, info.size_bytes

    def deploy(self, event: Event) -> Deployment:
        dep = self.service.handle_s3_object(*event)
        assert dep is not None
        return dep

    def failed(self, event: Event) -> str:
        dep = self.deploy(event)
        assert dep.state == "FAILED", dep
        assert dep.reason
        version = self.c.models.get_version(dep.model_name, dep.version)
        assert (version.status, version.reason) == ("FAILED", dep.reason)
        assert not any(self.scratch.iterdir())
        return dep.reason


def bundle(files: dict[str, bytes | None] | None = None) -> bytes:
    """A tar.gz of the example; ``files`` replace or add members, and a None value leaves one out."""
    members: dict[str, bytes | None] = {p.name: p.read_bytes() for p in EXAMPLE.iterdir() if p.is_file()}
    members.update(files or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_text(**replace_lines: str) -> bytes:
    text = (EXAMPLE / "modelport.yaml").read_text()
    for old, new in replace_lines.items():
        text = text.replace(old, new)
    return text.encode()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# ---------------------------------------------------------------------------------------------- keys, events


def test_upload_keys_round_trip_and_strays_are_ignored(world: World) -> None:
    assert upload_key("iris", 7) == "uploads/iris/v0000000007/bundle.tar.gz"
    assert parse_upload_key(upload_key("iris", 7, "zip")) == ("iris", 7)
    for key in ("uploads/iris/v7/bundle.tar.gz", "uploads/Iris/v0000000007/bundle.zip", "x/y",
                "uploads/iris/v0000000000/bundle.zip", "uploads/iris/v0000000007/other.tar.gz"):  # fmt: skip
        assert parse_upload_key(key) is None
        assert world.service.handle_s3_object(BUCKET, key, "e", 1) is None
    assert world.service.handle_s3_object("another-bucket", upload_key(NAME, 1), "e", 1) is None


def test_s3_records_from_the_canned_sqs_event() -> None:
    event = json.loads((EVENTS / "sqs_s3_notification.json").read_text())
    body = event["Records"][0]["body"]
    assert json.loads(body) == json.loads((EVENTS / "s3_object_created.json").read_text())
    key, etag = "uploads/iris-onnx/v0000000001/bundle.tar.gz", "0123456789abcdef0123456789abcdef"
    assert s3_records(body) == [("modelport-bundles", key, etag, 1187)]


def test_s3_records_decode_keys_and_drop_junk() -> None:
    doc = json.loads((EVENTS / "s3_object_created.json").read_text())
    doc["Records"][0]["s3"]["object"]["key"] = "uploads/a+b%2Bc.zip"
    assert s3_records(json.dumps(doc))[0][1] == "uploads/a b+c.zip"
    assert s3_records(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    assert s3_records("{not json") == []
    assert s3_records("[1, 2]") == []
    assert s3_records(json.dumps({"Records": [{"s3": {}}, "nonsense"]})) == []
    removed = json.loads(json.dumps(doc))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert s3_records(json.dumps(removed)) == []


def test_handle_message_deploys_what_the_body_names(world: World) -> None:
    _, key, etag, size = world.upload(bundle())
    doc = json.loads((EVENTS / "s3_object_created.json").read_text())
    doc["Records"][0]["s3"]["object"].update(key=key, eTag=etag, size=size)
    (dep,) = world.service.handle_message(json.dumps(doc))
    assert dep.state == "READY"


# ---------------------------------------------------------------------------------------------- the plan


def test_happy_path_records_every_stage_and_publishes_the_version(world: World) -> None:
    event = world.upload(bundle())
    dep = world.deploy(event)
    assert dep.state == "READY" and dep.reason is None and dep.lease_until is None
    assert dep.deployment_id == deployment_id(*event[:3])
    assert dep.source == f"s3://{BUCKET}/{event[1]}" and (dep.model_name, dep.version) == (NAME, 1)
    assert tuple(s.stage for s in dep.stages) == DEPLOYMENT_STAGES
    times = [t for s in dep.stages for t in (s.started_at, s.finished_at)]
    assert times == sorted(times)
    assert all(s.started_at < s.finished_at for s in dep.stages[1:])

    version = world.c.models.get_version(NAME, 1)
    assert (version.status, version.deployment_id, version.reason) == ("READY", dep.deployment_id, None)
    assert version.manifest is not None
    manifest = ModelConfigFile.model_validate_json(version.manifest)
    assert (manifest.name, manifest.version) == (NAME, 1)
    assert [f.path for f in manifest.artifact.files] == ["model.onnx"]
    assert manifest.container is not None and manifest.deployment is not None
    assert world.functions.calls[0].container == manifest.container  # functions run the built image

    association = world.c.associations.get_model_association(NAME, 1)
    assert association.image_uri == manifest.container.image_uri
    assert association.functions == ("modelport-iris-onnx",)
    env = world.c.associations.get_environment_image(manifest.environment.fingerprint)
    assert env is not None and env.image_uri == manifest.container.environment_image
    assert world.c.models.get_model(NAME).default_version == 1
    assert world.service.get(dep.deployment_id) == dep
    assert world.service.for_model(NAME) == [dep]
    assert not any(world.scratch.iterdir())


def test_a_zip_made_from_a_folder_deploys(world: World) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in EXAMPLE.iterdir():
            zf.write(path, f"iris-onnx/{path.name}")
    assert world.deploy(world.upload(buf.getvalue(), fmt="zip")).state == "READY"


def test_the_same_event_three_times_is_one_deployment(world: World) -> None:
    event = world.upload(bundle())
    deps = [world.deploy(event) for _ in range(3)]
    assert {d.deployment_id for d in deps} == {deps[0].deployment_id}
    assert all(d == deps[0] for d in deps)
    assert len(world.service.for_model(NAME)) == 1
    assert len(world.images.calls) == 1 and len(world.functions.calls) == 1


def test_two_uploads_of_one_model_are_two_versions(world: World) -> None:
    first, second = world.upload(bundle()), world.upload(bundle())
    assert first[1] != second[1]
    d2, d1 = world.deploy(second), world.deploy(first)
    assert (d1.version, d2.version) == (1, 2) and d1.deployment_id != d2.deployment_id
    assert [v.status for v in world.c.models.list_versions(NAME)] == ["READY", "READY"]
    assert world.c.models.get_model(NAME).default_version == 2  # the first to be READY
    assert len(world.service.for_model(NAME)) == 2


# ---------------------------------------------------------------------------------------------- crashes


def test_concurrent_deliveries_of_one_event_deploy_once(world: World) -> None:
    event = world.upload(bundle())
    outcomes: list[str] = []
    start = threading.Barrier(3)

    def deliver() -> None:
        start.wait()
        try:
            outcomes.append(world.deploy(event).state)
        except DeploymentBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "READY" in outcomes and set(outcomes) <= {"READY", "busy"}
    assert len(world.images.calls) == 1 and len(world.service.for_model(NAME)) == 1
    assert world.deploy(event).state == "READY"  # what a retried busy message finds


def test_a_failed_attempt_is_recorded_and_the_redelivery_resumes(world: World) -> None:
    event = world.upload(bundle())
    world.functions.fail_with = Unavailable("Lambda did not answer (Rate exceeded)")
    with pytest.raises(Unavailable, match="Rate exceeded"):
        world.deploy(event)
    (dep,) = world.service.for_model(NAME)
    assert dep.state == "IMAGE_BUILT" and dep.lease_until is None
    assert dep.reason == "attempt 1 failed: Lambda did not answer (Rate exceeded)"
    assert not any(world.scratch.iterdir())

    world.functions.fail_with = None
    dep = world.deploy(event)
    assert dep.state == "READY" and dep.attempts == 2 and dep.reason is None
    assert tuple(s.stage for s in dep.stages) == DEPLOYMENT_STAGES
    assert len(world.images.calls) == 1  # resumed after IMAGE_BUILT, not rebuilt


def test_a_dead_handler_is_taken_over_once_its_lease_expires(world: World) -> None:
    event = world.upload(bundle())
    world.images.fail_with = Killed()  # type: ignore[assignment]
    with pytest.raises(Killed):
        world.deploy(event)
    (dep,) = world.service.for_model(NAME)
    assert dep.state == "CONFIG_GENERATED" and dep.lease_until is not None

    world.images.fail_with = None
    with pytest.raises(DeploymentBusy):
        world.deploy(event)
    world.clock.advance(world.service.lease_s + 1)
    dep = world.deploy(event)
    assert dep.state == "READY" and dep.attempts == 2
    assert tuple(s.stage for s in dep.stages) == DEPLOYMENT_STAGES  # re-downloaded and rebuilt
    assert len(world.images.calls) == 2
    assert not any(world.scratch.iterdir())


def test_a_deployment_that_keeps_crashing_fails_after_three_attempts(world: World) -> None:
    event = world.upload(bundle())
    world.functions.fail_with = Unavailable("Lambda did not answer")
    for _ in range(3):
        with pytest.raises(Unavailable):
            world.deploy(event)
    reason = world.failed(event)
    assert reason == (
        "deployment did not finish after 3 attempts (last stage: IMAGE_BUILT); "
        "attempt 3 failed: Lambda did not answer"
    )
    assert len(world.functions.calls) == 3
    assert world.deploy(event).state == "FAILED"  # and stays so
    assert len(world.functions.calls) == 3


def test_a_handler_dying_between_failing_the_version_and_the_deployment(world: World) -> None:
    event = world.upload(bundle())
    world.images.fail_with = Killed()  # type: ignore[assignment]
    with pytest.raises(Killed):
        world.deploy(event)
    version = world.c.models.get_version(NAME, 1)
    world.c.models.update_version(version.model_copy(update={"status": "FAILED", "reason": "it broke"}))
    world.clock.advance(world.service.lease_s + 1)
    dep = world.deploy(event)
    assert (dep.state, dep.reason) == ("FAILED", "it broke")


def test_a_lost_race_for_the_lease_is_busy(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    event = world.upload(bundle())
    world.images.fail_with = Killed()  # type: ignore[assignment]
    with pytest.raises(Killed):
        world.deploy(event)
    world.clock.advance(world.service.lease_s + 1)
    (stale,) = world.service.for_model(NAME)
    world.c.deployments.save(stale)  # another handler claims it between our read and our write
    monkeypatch.setattr(world.c.deployments, "get", lambda _id: stale)
    with pytest.raises(DeploymentBusy, match="taken over"):
        world.deploy(event)
    assert len(world.images.calls) == 1


# ---------------------------------------------------------------------------------------------- bad input


def test_a_bundle_without_modelport_yaml(world: World) -> None:
    reason = world.failed(world.upload(bundle({"modelport.yaml": None})))
    assert reason.startswith("no modelport.yaml in the bundle"), reason
    assert "/tmp" not in reason and str(world.scratch) not in reason


def test_a_config_the_core_rejects_fails_with_its_message(world: World) -> None:
    reason = world.failed(world.upload(bundle({"modelport.yaml": config_text(environment="enviroment")})))
    assert reason == "modelport.yaml: unknown key 'enviroment': did you mean 'environment'?"


def test_an_unsafe_member_fails_naming_it(world: World) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(EXAMPLE / "modelport.yaml", "modelport.yaml")
        info = tarfile.TarInfo("../../evil.py")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"boom"))
    reason = world.failed(world.upload(buf.getvalue()))
    assert reason == "bundle member '../../evil.py': paths with '..' are not allowed"


def test_a_bundle_over_the_size_limit(tmp_path: Path) -> None:
    world = World(tmp_path, replace(Settings(), max_bundle_bytes=100 * 1024))
    event = world.upload(bundle({"noise.bin": os.urandom(300 * 1024)}))
    assert world.failed(event) == "bundle is 0.3 MB, over the 0.1 MB limit"
    lying = world.upload(bundle({"noise.bin": os.urandom(300 * 1024)}))
    assert world.failed((*lying[:3], 10)) == "bundle is 0.3 MB, over the 0.1 MB limit"


def test_a_name_mismatch(world: World) -> None:
    reason = world.failed(world.upload(bundle(), name="other-model"))
    assert "names the model 'iris-onnx'" in reason and "uploaded as 'other-model'" in reason


def test_an_upload_for_a_version_nobody_reserved(world: World) -> None:
    key = upload_key(NAME, 5)
    info = world.c.artifacts.put(key, bundle())
    dep = world.deploy((BUCKET, key, info.etag, info.size_bytes))
    assert dep.state == "FAILED" and dep.reason
    assert dep.reason.startswith(f"no version 5 of model '{NAME}' was reserved")


def test_a_replaced_bundle_does_not_clobber_the_version_it_lost(world: World) -> None:
    event = world.upload(bundle())
    assert world.deploy(event).state == "READY"
    again = world.c.artifacts.put(event[1], bundle({"extra.txt": b"x"}))
    dep = world.deploy((BUCKET, event[1], again.etag, again.size_bytes))
    assert dep.state == "FAILED" and dep.reason and "deployed by another upload" in dep.reason
    assert world.c.models.get_version(NAME, 1).status == "READY"


def test_a_message_moved_to_the_dlq_ends_its_deployment_failed(world: World) -> None:
    event = world.upload(bundle())
    world.images.fail_with = Killed()  # type: ignore[assignment]
    with pytest.raises(Killed):
        world.deploy(event)
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": event[0]},
                        "object": {"key": event[1], "eTag": event[2], "size": event[3]},
                    },
                }
            ]
        }
    )
    (ended,) = world.service.give_up(body)
    assert ended.state == "FAILED"
    assert ended.reason is not None and "gave up after repeated failed deliveries" in ended.reason
    assert world.c.models.get_version(NAME, ended.version).status == "FAILED"
    assert world.service.give_up(body) == []  # already terminal: nothing more to do
