"""A deterministic non-domain error fails a deployment at once, with an error id and no raw text."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib.core.errors import Unavailable
from chalicelib.docker import EngineUnavailable
from tests.unit.test_deployments import NAME, World, bundle

GENERIC = re.compile(
    r"internal error while (?P<doing>[a-z ]+) \(error id (?P<id>[0-9a-f]{16})\); "
    r"the operators have been notified"
)
SECRET = "/proc/1/environ MODELPORT_ADMIN_KEY=mp_admin_0123456789"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.mark.parametrize(
    ("error", "where"),
    [
        (RecursionError(f"maximum recursion depth exceeded {SECRET}"), "images"),
        (TypeError(f"unsupported operand {SECRET}"), "images"),
        (OSError(28, f"No space left on device: {SECRET}"), "functions"),
        (MemoryError(SECRET), "functions"),
        (
            ClientError({"Error": {"Code": "ValidationException", "Message": SECRET}}, "CreateFunction"),
            "functions",
        ),
    ],
    ids=["recursion", "type", "os", "memory", "client-4xx"],
)
def test_a_bug_fails_on_the_first_attempt_with_an_error_id(
    world: World, caplog: pytest.LogCaptureFixture, error: Exception, where: str
) -> None:
    fake = world.images if where == "images" else world.functions
    fake.fail_with = error
    event = world.upload(bundle())
    with caplog.at_level(logging.ERROR, "chalicelib.services.deployments"):
        reason = world.failed(event)  # returns: no exception reaches SQS, so no redelivery
    match = GENERIC.fullmatch(reason)
    assert match, reason
    assert match["doing"] == ("building the image" if where == "images" else "deploying the functions")
    assert SECRET not in reason and type(error).__name__ not in reason
    (dep,) = world.service.for_model(NAME)
    assert dep.attempts == 1 and len(fake.calls) == 1
    assert world.deploy(event).state == "FAILED" and len(fake.calls) == 1  # a redelivery changes nothing
    logged = [r for r in caplog.records if match["id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[1] is error


@pytest.mark.parametrize(
    "outage",
    [
        Unavailable("a backing service did not answer (CreateFunction: ServiceException)"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ClientError(
            {"Error": {"Code": "ServiceException"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "X"
        ),
    ],
    ids=["unavailable", "endpoint", "client-5xx"],
)
def test_an_outage_is_raised_for_a_retry_and_the_retry_resumes(world: World, outage: Exception) -> None:
    """A service that did not answer may answer the redelivery: the attempt is recorded, not failed."""
    world.functions.fail_with = outage
    event = world.upload(bundle())
    with pytest.raises(type(outage)):
        world.deploy(event)
    (dep,) = world.service.for_model(NAME)
    assert dep.state == "IMAGE_BUILT" and dep.lease_until is None
    assert dep.reason is not None and dep.reason.startswith("attempt 1 failed: a backing service")
    world.functions.fail_with = None
    assert world.deploy(event).state == "READY"


def test_a_docker_engine_that_does_not_answer_is_retried(world: World) -> None:
    world.images.fail_with = EngineUnavailable("the docker engine does not answer: connection refused")
    event = world.upload(bundle())
    with pytest.raises(EngineUnavailable):
        world.deploy(event)
    (dep,) = world.service.for_model(NAME)
    assert dep.state == "CONFIG_GENERATED" and dep.lease_until is None
    assert dep.reason == "attempt 1 failed: the docker engine does not answer: connection refused"
    world.images.fail_with = None
    assert world.deploy(event).state == "READY"
