"""The invoke endpoints: grants, validation before any function runs, negotiation, errors, OIP v2."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.core.errors import FunctionFailed, FunctionTimedOut
from chalicelib.core.wire import BASE64, negotiate, reply
from chalicelib.memory.stores import MemoryInvoker
from chalicelib.settings import Settings
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy, new_account

IRIS_LABELS = ["setosa", "versicolor", "virginica"]


class FakeIris:
    """Stands in for the model's function: answers from the event, records what it was sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail: Exception | None = None

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        if self.fail is not None:
            raise self.fail
        if event["accept"] == "image/png":
            png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
            return dict(reply(200, png, "image/png", BASE64))
        rows = json.loads(event["body"])["records"] if event["content_type"] == "application/json" else [{}]
        predictions = [[{"label": label, "score": 1 / 3} for label in IRIS_LABELS] for _ in rows]
        figure = {"media_type": "image/png", "data": base64.b64encode(b"png").decode()}
        answer = reply(200, json.dumps({"predictions": predictions, "figure": figure}))
        return {**answer, "timings": {"pre_ms": 0.1, "model_ms": 0.25, "post_ms": 1.5}}


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    container = wiring.memory_container(Settings(admin_key=ADMIN_KEY))
    wiring.override(container)
    fake = FakeIris()
    assert isinstance(container.invoker, MemoryInvoker)
    container.invoker.register("modelport-iris", fake)
    with Client(app) as client:
        admin = Api(client, ADMIN_KEY)
        alice, _ = new_account(admin, "alice")
        bob, bob_id = new_account(admin, "bob")
        config = (
            (ROOT / "examples/iris-onnx/modelport.yaml").read_text().replace("name: iris-onnx", "name: iris")
        )
        done = deploy(container, alice, "iris", bundle(config=config))
        assert done["deployment"].state == "READY"
        yield {"alice": alice, "bob": bob, "bob_id": bob_id, "fake": fake, "container": container}
    wiring.override(None)


RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_an_owner_invokes_and_sees_stage_timings(world: dict[str, Any]) -> None:
    r = world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]})
    assert r.status_code == 200, r.body
    assert r.json_body["predictions"][0][0]["label"] == "setosa"
    stages, billed, cost = r.headers["Server-Timing"].rsplit(", ", 2)
    assert stages == "pre;dur=0.100, model;dur=0.250, post;dur=1.500"
    assert billed.startswith("billed;dur=") and cost.startswith('cost;desc="0.0000')  # test_usage_api.py
    event = world["fake"].events[-1]
    assert event["content_type"] == "application/json" and event["accept"] == "application/json"
    assert (
        world["alice"].call("POST", "/v1/models/iris/versions/1/invoke", {"records": [RECORD]}).status_code
        == 200
    )


def test_another_account_needs_a_grant_and_gets_404_without(world: dict[str, Any]) -> None:
    bob = world["bob"]
    assert bob.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 404
    assert bob.call("GET", "/v2/models/iris").status_code == 404
    assert world["alice"].call("PUT", f"/v1/models/iris/grants/{world['bob_id']}").status_code == 200
    assert bob.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        ("{oops", "application/json", 400, "malformed JSON"),
        ({"records": [{**RECORD, "sepal_width": "wide"}]}, "application/json", 400, "/records/0/sepal_width"),
        (
            {"records": [{"sepal_length": 5.1}]},
            "application/json",
            400,
            "'sepal_width' is a required property",
        ),
        ({"records": [{**RECORD, "colour": 1}]}, "application/json", 400, "Additional properties"),
        ({"rows": [[1, 2, 3]]}, "application/json", 400, "/rows/0"),
        ("1,2,3\n", "text/csv", 400, "CSV row 1 has 3 columns, expected 4"),
        (b"\x89PNG\r\n\x1a\n....", "image/png", 415, "does not take image/png"),
    ],
)
def test_bad_requests_are_refused_before_the_function_runs(
    world: dict[str, Any], body: Any, content_type: str, status: int, needle: str
) -> None:
    r = world["alice"].call("POST", "/v1/models/iris/invoke", body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.body
    assert needle in r.body.decode()
    assert world["fake"].events == []


def test_the_errors_carry_json_pointers(world: dict[str, Any]) -> None:
    r = world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [{**RECORD, "petal_width": None}]})
    assert r.json_body["errors"] == [
        {"pointer": "/records/0/petal_width", "message": "None is not of type 'number'"}
    ]


def test_csv_with_or_without_header_reaches_the_function(world: dict[str, Any]) -> None:
    for text in ("5.1,3.5,1.4,0.2\n", "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"):
        r = world["alice"].call("POST", "/v1/models/iris/invoke", text, headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.body
    assert world["fake"].events[-1]["body"] == text


def test_accept_chooses_the_picture_or_refuses(world: dict[str, Any]) -> None:
    r = world["alice"].call(
        "POST", "/v1/models/iris/invoke", {"records": [RECORD]}, headers={"Accept": "image/png"}
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/png"
    assert r.body.startswith(b"\x89PNG")
    refused = world["alice"].call(
        "POST", "/v1/models/iris/invoke", {"records": [RECORD]}, headers={"Accept": "text/html"}
    )
    assert refused.status_code == 406
    assert "answers application/json, image/png" in refused.body.decode()


def test_negotiation_respects_q_values() -> None:
    offered = ("application/json", "image/png")
    assert negotiate("image/png;q=0.9, application/json;q=0.5", offered) == "image/png"
    assert negotiate("*/*", offered) == "application/json"
    assert negotiate("image/*", offered) == "image/png"
    assert negotiate(None, offered) == "application/json"


def test_a_payload_over_the_sync_limit_is_413(world: dict[str, Any]) -> None:
    big = {"records": [RECORD] * 90_000}  # ~7 MB of JSON
    r = world["alice"].call("POST", "/v1/models/iris/invoke", big)
    assert r.status_code == 413
    assert "6 MB" in r.json_body["message"]


def test_function_failures_are_502_and_timeouts_504(world: dict[str, Any]) -> None:
    world["fake"].fail = FunctionFailed("the model's function failed: Runtime.ExitError: signal: killed")
    r = world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]})
    assert r.status_code == 502 and "signal: killed" in r.json_body["message"]
    world["fake"].fail = FunctionTimedOut("the model's function timed out")
    assert world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 504


def test_unknown_and_not_ready_versions(world: dict[str, Any]) -> None:
    alice = world["alice"]
    assert alice.call("POST", "/v1/models/nope/invoke", {}).status_code == 404
    assert alice.call("POST", "/v1/models/iris/versions/9/invoke", {}).status_code == 404
    alice.call("POST", "/v1/models/iris/versions", {"size_bytes": 10})  # version 2, never uploaded
    r = alice.call("POST", "/v1/models/iris/versions/2/invoke", {"records": [RECORD]})
    assert r.status_code == 409 and "PENDING_UPLOAD" in r.json_body["message"]


def test_open_inference_protocol_v2(world: dict[str, Any]) -> None:
    alice = world["alice"]
    assert alice.client.http.get("/v2/health/ready").json_body == {"ready": True}
    meta = alice.call("GET", "/v2/models/iris").json_body
    assert [t["name"] for t in meta["inputs"]] == list(RECORD)
    request = {
        "id": "r1",
        "inputs": [{"name": n, "datatype": "FP32", "shape": [2], "data": [v, v]} for n, v in RECORD.items()],
    }
    r = alice.call("POST", "/v2/models/iris/infer", request)
    assert r.status_code == 200, r.body
    body = r.json_body
    assert body["id"] == "r1" and body["model_name"] == "iris"
    outputs = {t["name"]: t for t in body["outputs"]}
    assert outputs["label"]["shape"] == [2, 3] and outputs["label"]["data"][:3] == IRIS_LABELS
    assert outputs["figure"]["parameters"] == {"content_type": "image/png"}
    sent = json.loads(world["fake"].events[-1]["body"])
    assert sent == {"records": [RECORD, RECORD]}
    bad = alice.call("POST", "/v2/models/iris/infer", {"inputs": request["inputs"][:2]})
    assert (
        bad.status_code == 400 and "missing input tensor(s): petal_length, petal_width" in bad.body.decode()
    )


def test_each_model_serves_its_openapi(world: dict[str, Any]) -> None:
    doc = world["alice"].call("GET", "/v1/models/iris/openapi.json").json_body
    assert "/v1/models/iris/invoke" in doc["paths"]


# --------------------------------------------------------------------------- with the real runtime


@pytest.fixture
def real(tmp_path: Any) -> Iterator[dict[str, Any]]:
    """Every example deployed, each function served by the real runtime in this process."""
    from chalicelib.core.config_file import ModelConfigFile
    from chalicelib.runtime.handler import load
    from chalicelib.runtime.layout import prepare_model_dir

    container = wiring.memory_container(Settings(admin_key=ADMIN_KEY))
    wiring.override(container)
    assert isinstance(container.invoker, MemoryInvoker)
    with Client(app) as client:
        alice, _ = new_account(Api(client, ADMIN_KEY), "alice")
        for example in ("iris-onnx", "digits-onnx", "sentiment-predictor"):
            assert deploy(container, alice, example, bundle(example))["deployment"].state == "READY"
            manifest = ModelConfigFile.model_validate_json(
                container.models.get_version(example, 1).manifest or ""
            )
            model_dir = prepare_model_dir(ROOT / "examples" / example, manifest, tmp_path / example)
            container.invoker.register(f"modelport-{example}", load(model_dir).handle)
        yield {"alice": alice}
    wiring.override(None)


def test_end_to_end_in_process_predictions(real: dict[str, Any]) -> None:
    alice = real["alice"]
    iris = alice.call("POST", "/v1/models/iris-onnx/invoke", {"records": [RECORD]})
    assert iris.status_code == 200, iris.body
    assert iris.json_body["predictions"][0][0]["label"] == "setosa"
    assert base64.b64decode(iris.json_body["figure"]["data"]).startswith(b"\x89PNG")
    assert {"pre", "model", "post"} <= {
        part.split(";")[0] for part in iris.headers["Server-Timing"].split(", ")
    }

    png = (ROOT / "examples/digits-onnx/samples/digit-7.png").read_bytes()
    digit = alice.call("POST", "/v1/models/digits-onnx/invoke", png, headers={"Content-Type": "image/png"})
    assert digit.status_code == 200, digit.body
    assert digit.json_body["predictions"][0][0]["label"] == "7"
    assert len(digit.json_body["predictions"][0]) == 3

    text = alice.call(
        "POST", "/v1/models/sentiment-predictor/invoke", {"text": "a wonderful, delightful day"}
    )
    assert text.status_code == 200, text.body
    assert text.json_body["output"]["label"] == "positive"


def test_a_bad_image_is_refused_by_the_runtime_with_a_400(real: dict[str, Any]) -> None:
    r = real["alice"].call(
        "POST",
        "/v1/models/digits-onnx/invoke",
        b"\x89PNG\r\n\x1a\nnot really",
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 400
    assert r.json_body["code"] == "InvalidRequest"


def test_warm_invokes_read_no_table_and_a_revoked_grant_applies_at_once(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    container, alice, bob = world["container"], world["alice"], world["bob"]
    assert alice.call("PUT", f"/v1/models/iris/grants/{world['bob_id']}").status_code == 200
    for caller in (alice, bob):  # the first call of each account looks everything up
        assert caller.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 200
    reads: list[str] = []
    for store, names in (
        (container.models, ("get_model", "get_version")),
        (container.accounts, ("get_key", "get_account", "has_grant")),
    ):
        for name in names:
            original = getattr(store, name)
            monkeypatch.setattr(
                store, name, lambda *a, _o=original, _n=name, **k: (reads.append(_n), _o(*a, **k))[1]
            )
    for caller in (alice, bob, alice):
        assert caller.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 200
    assert reads == []
    assert alice.call("DELETE", f"/v1/models/iris/grants/{world['bob_id']}").status_code == 204
    assert bob.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 404
