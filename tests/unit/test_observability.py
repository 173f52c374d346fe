"""Trace ids (a client's header is hostile input), the API's structured lines and EMF metrics, and the
runtime's invocation line (docs/observability.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.api.deps import services
from chalicelib.core import trace
from chalicelib.core.wire import reply
from chalicelib.memory.stores import MemoryInvoker
from chalicelib.settings import Settings
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy, new_account

pytestmark = pytest.mark.unit

GOOD = "1-5759e988-bd862e3fe1be46a994272793"


@pytest.mark.parametrize(
    "header",
    [
        f"Root={GOOD}",
        f"Root={GOOD};Parent=53995c3f42cd8ad8;Sampled=1",
        f"Self=1-67891234-abcdef012345678912345678;Root={GOOD.upper().replace('1-', '1-', 1)}",
        f" Root = {GOOD} ",
    ],
)
def test_a_well_formed_root_is_taken(header: str) -> None:
    assert trace.parse_trace_header(header) == GOOD


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        GOOD,  # not a Root= field
        "Root=1-5759e988-bd862e3fe1be46a99427279",  # 23 hex
        "Root=1-5759e988-bd862e3fe1be46a9942727930",  # 25 hex
        "Root=2-5759e988-bd862e3fe1be46a994272793",
        "Root=1-5759e98g-bd862e3fe1be46a994272793",
        'Root=1-5759e988-bd862e3fe1be46a994272793"\r\nX-Evil: 1',
        "Root=1-5759e988-bd862e3fe1be46a994272793<script>",
        f"Root={GOOD};" + "x" * 300,  # longer than any real header: not read at all
        12345,
    ],
)
def test_a_malformed_header_is_ignored(header: Any) -> None:
    assert trace.parse_trace_header(header) is None
    minted = trace.trace_id_for(header)
    assert trace.TRACE_ID.fullmatch(minted) and minted != GOOD


def test_minted_ids_are_x_ray_ids_with_the_time_and_differ() -> None:
    a, b = trace.mint_trace_id(0x5759E988), trace.mint_trace_id()
    assert a.startswith("1-5759e988-") and trace.TRACE_ID.fullmatch(a) and trace.TRACE_ID.fullmatch(b)
    assert a != b


def test_traceparent_is_read_and_answered_for_the_same_trace() -> None:
    parent = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    assert trace.parse_traceparent(parent) == GOOD
    assert trace.trace_id_for(None, parent) == GOOD
    assert trace.trace_id_for(f"Root={GOOD.replace('5759', '6666')}", parent) != GOOD  # X-Ray's first
    assert trace.parse_traceparent("00-" + "0" * 32 + "-53995c3f42cd8ad8-01") is None
    headers = trace.trace_headers(GOOD)
    assert headers["X-Amzn-Trace-Id"] == f"Root={GOOD}"
    assert trace.parse_traceparent(headers["traceparent"]) == GOOD


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    container = wiring.memory_container(Settings(admin_key=ADMIN_KEY))
    wiring.override(container)
    events: list[dict[str, Any]] = []

    def model(event: dict[str, Any]) -> dict[str, Any]:
        events.append(event)
        answer = reply(200, json.dumps({"predictions": [[{"label": "setosa", "score": 1.0}]]}))
        return {**answer, "runs": [{"role": "fused", "ms": 3.0, "init_ms": 120.0}]}

    assert isinstance(container.invoker, MemoryInvoker)
    container.invoker.register("modelport-iris", model)
    with Client(app) as client:
        admin = Api(client, ADMIN_KEY)
        alice, alice_id = new_account(admin, "alice")
        config = (
            (ROOT / "examples/iris-onnx/modelport.yaml").read_text().replace("name: iris-onnx", "name: iris")
        )
        assert deploy(container, alice, "iris", bundle(config=config))["deployment"].state == "READY"
        yield {"alice": alice, "alice_id": alice_id, "events": events}
    wiring.override(None)


RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            found.append(doc)
    return found


def test_an_invocation_carries_the_trace_id_to_the_function_the_log_and_the_answer(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    headers = {"X-Amzn-Trace-Id": f"Root={GOOD};Parent=53995c3f42cd8ad8;Sampled=1"}
    r = world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}, headers)
    assert r.status_code == 200, r.body
    assert r.headers["X-Amzn-Trace-Id"] == f"Root={GOOD}"
    assert trace.parse_traceparent(r.headers["traceparent"]) == GOOD
    assert world["events"][-1]["trace_id"] == GOOD
    lines = _lines(capsys.readouterr().out)
    request = next(d for d in lines if d.get("message") == "request")
    assert request["service"] == "modelport-api" and request["trace_id"] == GOOD
    assert request["model"] == "iris" and request["version"] == 1 and request["stage"] == "local"
    assert request["account"] == world["alice_id"] and request["request_id"]
    assert request["method"] == "POST" and request["status"] == 200 and request["duration_ms"] >= 0
    assert request["route"] == "/v1/models/{name}/invoke" and request["cold_starts"] == 1
    emf = next(d for d in lines if "_aws" in d and "Invocations" in d)
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Modelport" and ["model", "service"] in [
        sorted(dims) for dims in directive["Dimensions"]
    ]
    assert emf["model"] == "iris" and emf["Invocations"] in (1.0, [1.0])
    assert emf["ColdStarts"] in (1.0, [1.0]) and emf["Errors"] in (0.0, [0.0])
    assert emf["trace_id"] == GOOD


def test_a_hostile_header_is_never_echoed_and_a_refusal_is_counted_by_class(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    hostile = "Root=1-5759e988-bd862e3fe1be46a99427279Z;<script>"
    r = world["alice"].call(
        "POST", "/v1/models/iris/invoke", {"records": [{"x": 1}]}, {"X-Amzn-Trace-Id": hostile}
    )
    assert r.status_code == 400
    answered = trace.parse_trace_header(r.headers["X-Amzn-Trace-Id"])
    assert answered is not None and answered not in hostile and "script" not in r.headers["X-Amzn-Trace-Id"]
    lines = _lines(capsys.readouterr().out)
    assert "script" not in json.dumps(lines)
    request = next(d for d in lines if d.get("message") == "request")
    assert request["trace_id"] == answered and request["error_class"] == "InvalidRequest"
    by_class = next(d for d in lines if "ErrorsByClass" in d)
    assert by_class["error_class"] == "InvalidRequest" and by_class["model"] == "iris"


def test_every_answer_has_a_trace_id_even_unauthenticated_ones(world: dict[str, Any]) -> None:
    r = world["alice"].client.http.get("/v1/health")
    assert trace.parse_trace_header(r.headers["X-Amzn-Trace-Id"]) is not None


def test_the_runtime_logs_one_line_per_invocation_with_the_trace_and_hands_it_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from chalicelib.core.wire import invocation_event
    from chalicelib.runtime.handler import from_manifest
    from chalicelib.services.intake import config_file_for_dir

    directory = ROOT / "examples/iris-onnx"
    manifest = config_file_for_dir(directory)
    assert manifest.processing.pre and manifest.processing.post
    pre = from_manifest(manifest, directory, "pre", warm=False, started=0.0)
    capsys.readouterr()
    event = dict(invocation_event(json.dumps({"rows": [[5.1, 3.5, 1.4, 0.2]]}), "application/json"))
    event["trace_id"] = GOOD
    handed = pre.handle(event)
    assert handed["trace_id"] == GOOD
    (line,) = _lines(capsys.readouterr().out)
    assert line["trace_id"] == GOOD and line["role"] == "pre" and line["model"] == "iris-onnx"
    assert line["message"] == "invocation" and line["status"] == 200 and line["cold_start"] is True
    event["trace_id"] = "not a trace id"
    assert "trace_id" not in pre.handle(event)
    (line,) = _lines(capsys.readouterr().out)
    assert line["trace_id"] is None


def test_modelport_logs_refuses_a_trace_that_is_not_an_id() -> None:
    from click.testing import CliRunner

    from chalicelib.cli import cli

    result = CliRunner().invoke(cli, ["logs", "iris", "--trace", "Root=1-zz;<script>"])
    assert result.exit_code == 2 and "X-Ray trace id" in result.output


def test_the_worker_logs_a_deployment_and_its_stage_durations_in_emf(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from chalicelib.core.records import Deployment, StageRecord
    from chalicelib.worker import observe

    stages = (
        StageRecord(
            stage="RECEIVED", started_at="2026-12-03T10:00:00+00:00", finished_at="2026-12-03T10:00:00+00:00"
        ),
        StageRecord(
            stage="READY", started_at="2026-12-03T10:00:00+00:00", finished_at="2026-12-03T10:00:02.5+00:00"
        ),
    )
    dep = Deployment(
        deployment_id="d1",
        model_name="iris",
        version=3,
        source="s3://b/k",
        state="READY",
        stages=stages,
        created_at="2026-12-03T10:00:00+00:00",
        updated_at="2026-12-03T10:00:02.5+00:00",
    )
    trace_id = observe.begin_record(None, "m-1")
    try:
        observe.deployments_moved([dep])
        observe.deployments_moved([object()])  # type: ignore[list-item]  # never raises
    finally:
        observe.end_record()
    lines = _lines(capsys.readouterr().out)
    line = next(d for d in lines if d.get("message") == "deployment")
    assert line["trace_id"] == trace_id and line["model"] == "iris" and line["version"] == 3
    assert line["duration_ms"] == 2500.0 and line["state"] == "READY" and line["message_id"] == "m-1"
    total = next(d for d in lines if "DeploymentDuration" in d)
    assert total["model"] == "iris" and total["DeploymentDuration"] in (2500.0, [2500.0])
    per_stage = [d for d in lines if "DeploymentStageDuration" in d]
    assert {d["deployment_stage"] for d in per_stage} == {"RECEIVED", "READY"}


def test_an_async_job_runs_under_the_trace_id_of_the_request_that_accepted_it(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    headers = {"X-Amzn-Trace-Id": f"Root={GOOD};Sampled=1", "Prefer": "respond-async"}
    r = world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}, headers)
    assert r.status_code == 202, r.body
    assert r.json_body["trace_id"] == GOOD and r.headers["X-Amzn-Trace-Id"] == f"Root={GOOD}"
    container = wiring.container()
    capsys.readouterr()
    for job_id in container.job_queue.sent:  # the jobs queue's runner, outside any request
        services().jobs.handle_message(json.dumps({"job_id": job_id}))
    assert world["events"][-1]["trace_id"] == GOOD  # the model function's event, so its lines and X-Ray
    assert trace.current() is None  # the run's observation ended with it
    done = world["alice"].call("GET", f"/v1/jobs/{r.json_body['job_id']}").json_body
    assert done["status"] == "SUCCEEDED" and done["trace_id"] == GOOD
    # a job from before trace ids runs under a new one
    old = container.jobs.get(done["job_id"]).model_copy(update={"status": "QUEUED", "trace_id": None})
    container.jobs.save(old)
    services().jobs.run(old.job_id)
    minted = world["events"][-1]["trace_id"]
    assert trace.TRACE_ID.fullmatch(minted) and minted != GOOD


def test_lines_written_while_a_job_or_message_is_observed_carry_its_trace_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from chalicelib.api.observe import logger

    capsys.readouterr()
    with trace.observing(GOOD):
        logger.info("a job's line")
    logger.info("outside")
    lines = {d["message"]: d for d in _lines(capsys.readouterr().out)}
    assert lines["a job's line"]["trace_id"] == GOOD
    assert "trace_id" not in lines["outside"]


def test_a_job_record_takes_only_a_well_formed_trace_id_and_old_records_load() -> None:
    from pydantic import ValidationError

    from chalicelib.core.records import Job

    doc = {
        "job_id": "job-1", "account_id": "a", "model_name": "iris", "version": 1, "status": "QUEUED",
        "input_key": "jobs/job-1/request", "content_type": "application/json", "accept": "*/*",
        "created_at": "2025-01-01T00:00:00Z", "expires_at": 1,
    }  # fmt: skip
    assert Job.model_validate(doc).trace_id is None  # a record from before trace ids
    assert Job.model_validate({**doc, "trace_id": GOOD}).trace_id == GOOD
    for bad in ("Root=" + GOOD, GOOD.upper(), GOOD + "0", "1-xyz", "x" * 10_000):
        with pytest.raises(ValidationError):
            Job.model_validate({**doc, "trace_id": bad})
