"""Hostile requests (issue 10): each is refused with a 4xx that says why, never a 500 or a 502 from a
later step. Through the API (in process, memory twins, the real runtime serving the functions) and
through the runtime handler alone, its second line of defence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.wire import MAX_SYNC_PAYLOAD
from chalicelib.memory.stores import MemoryInvoker
from chalicelib.runtime.handler import MAX_RESPONSE_BYTES, Runtime, load
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.settings import Settings
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy, new_account

RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
DEEP = "[" * 10_000 + "]" * 10_000
TENSORS_CONFIG = """name: iris-tensors
description: iris ONNX without steps, so its request is the float32 tensor itself
framework: onnx
artifacts: [model.onnx]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """iris-onnx (records -> labels + bar chart) and iris-tensors (float32[-1,4] in, tensors out), both
    deployed through the API and served by the real runtime in this process."""
    tmp = tmp_path_factory.mktemp("world")
    container = wiring.memory_container(Settings(admin_key=ADMIN_KEY))
    wiring.override(container)
    assert isinstance(container.invoker, MemoryInvoker)
    runtimes: dict[str, Runtime] = {}
    with Client(app) as client:
        admin = Api(client, ADMIN_KEY)
        alice, _ = new_account(admin, "alice")
        for name, config in (("iris-onnx", None), ("iris-tensors", TENSORS_CONFIG)):
            assert (
                deploy(container, alice, name, bundle("iris-onnx", config=config))["deployment"].state
                == "READY"
            )
            manifest = ModelConfigFile.model_validate_json(
                container.models.get_version(name, 1).manifest or ""
            )
            model_dir = prepare_model_dir(ROOT / "examples/iris-onnx", manifest, tmp / name)
            runtimes[name] = load(model_dir)
            container.invoker.register(f"modelport-{name}", runtimes[name].handle)
        yield {"admin": admin, "alice": alice, "container": container, "runtimes": runtimes}
    wiring.override(None)


def _refused(r: Any, status: int, code: str, needle: str) -> dict[str, Any]:
    assert r.status_code == status, r.body
    body: dict[str, Any] = json.loads(r.body)
    assert body["code"] == code, body
    assert needle in body["message"], body
    return body


# --------------------------------------------------------------------------- nesting


@pytest.mark.parametrize(
    ("who", "method", "path"),
    [
        ("admin", "POST", "/v1/accounts"),
        ("alice", "POST", "/v1/models"),
        ("alice", "POST", "/v1/models/iris-onnx/versions"),
        ("alice", "PUT", "/v1/models/iris-onnx/default"),
        ("alice", "POST", "/v1/models/iris-onnx/invoke"),
        ("alice", "POST", "/v1/models/iris-onnx/versions/1/invoke"),
        ("alice", "POST", "/v2/models/iris-onnx/infer"),
        ("alice", "POST", "/v2/models/iris-tensors/infer"),
    ],
)
def test_json_nested_10000_deep_is_a_400_on_every_json_route(
    world: dict[str, Any], who: str, method: str, path: str
) -> None:
    body = _refused(
        world[who].call(method, path, DEEP), 400, "InvalidRequest", "nested deeper than 64 levels"
    )
    assert body["errors"] == [{"pointer": "", "message": body["message"]}]


def test_the_runtime_refuses_deep_json_itself(world: dict[str, Any]) -> None:
    reply = world["runtimes"]["iris-tensors"].handle({"body": DEEP, "content_type": "application/json"})
    assert reply["status"] == 400
    assert "nested deeper than 64 levels" in json.loads(reply["body"])["message"]


# --------------------------------------------------------------------------- OIP v2


def _oip(shape: Any, data: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": data}]}


@pytest.mark.parametrize("shape", [["1", "4"], None, [1.0, 4], [True, 4], [-1, 4]])
def test_oip_shape_that_is_not_non_negative_integers_is_a_400(world: dict[str, Any], shape: Any) -> None:
    r = world["alice"].call("POST", "/v2/models/iris-tensors/infer", _oip(shape, [5.1, 3.5, 1.4, 0.2]))
    body = _refused(r, 400, "InvalidRequest", "shape must be a list of at most 64 non-negative integers")
    assert body["errors"][0]["pointer"] == "/inputs/0/shape"


def test_oip_zero_dimension_is_a_400(world: dict[str, Any]) -> None:
    r = world["alice"].call("POST", "/v2/models/iris-tensors/infer", _oip([0, 4], []))
    _refused(r, 400, "InvalidRequest", "has a zero dimension")


def test_oip_data_nested_900_deep_is_a_400(world: dict[str, Any]) -> None:
    data: Any = 5.1
    for _ in range(900):
        data = [data]
    r = world["alice"].call("POST", "/v2/models/iris-tensors/infer", _oip([1], data))
    _refused(r, 400, "InvalidRequest", "nested deeper than 64 levels")


def test_oip_infer_still_answers(world: dict[str, Any]) -> None:
    r = world["alice"].call("POST", "/v2/models/iris-tensors/infer", _oip([1, 4], [5.1, 3.5, 1.4, 0.2]))
    assert r.status_code == 200, r.body
    assert {t["name"] for t in r.json_body["outputs"]} == {"label", "probabilities"}


# --------------------------------------------------------------------------- path parameters


@pytest.mark.parametrize("version", ["²", "٣", "9" * 5000, "0", "-1", "1e3"])
@pytest.mark.parametrize(
    "route", ["GET /v1/models/iris-onnx/versions/{v}", "POST /v1/models/iris-onnx/versions/{v}/invoke"]
)
def test_a_version_that_is_not_a_small_positive_integer_is_a_400(
    world: dict[str, Any], version: str, route: str
) -> None:
    method, path = route.split()
    r = world["alice"].call(method, path.format(v=version), {"records": [RECORD]})
    body = _refused(r, 400, "InvalidRequest", "version must be a positive integer of at most 9 digits")
    assert len(body["message"]) < 200  # the 5,000 digits are not echoed


@pytest.mark.parametrize("name", ["Iris", "a" * 5000, "iris_onnx", "-iris", "²"])
def test_a_name_that_breaks_the_naming_rule_is_a_404_without_a_store_read(
    world: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    models = world["container"].models
    for method in ("get_model", "get_version"):
        original = getattr(models, method)
        monkeypatch.setattr(
            models, method, lambda *a, _o=original, _m=method, **k: (reads.append(_m), _o(*a, **k))[1]
        )
    for method, path in (
        ("POST", f"/v1/models/{name}/invoke"),
        ("GET", f"/v2/models/{name}"),
        ("POST", f"/v2/models/{name}/infer"),
        ("GET", f"/v1/models/{name}/openapi.json"),
    ):
        body = _refused(world["alice"].call(method, path, {"records": [RECORD]}), 404, "NotFound", "no model")
        assert len(body["message"]) < 100
    assert reads == []


# --------------------------------------------------------------------------- numbers


def _invoke_text(world: dict[str, Any], model: str, text: str | bytes) -> Any:
    return world["alice"].call("POST", f"/v1/models/{model}/invoke", text)


def _record_with(value: str) -> str:
    """A one-record body with ``value`` as the raw JSON text of sepal_length."""
    return json.dumps({"records": [{**RECORD, "sepal_length": "@"}]}).replace('"@"', value)


def test_a_400_digit_integer_is_a_400(world: dict[str, Any]) -> None:
    body = _refused(
        _invoke_text(world, "iris-onnx", _record_with("1" * 400)),
        400,
        "InvalidRequest",
        "too large for a 64-bit float",
    )
    assert body["errors"][0]["pointer"] == "/records/0/sepal_length"
    assert len(body["message"]) < 300


@pytest.mark.parametrize("value", ["1e39", "-1e39", "3.5e38"])
def test_a_number_over_float32_is_a_400_not_a_502_from_the_bar_chart(
    world: dict[str, Any], value: str
) -> None:
    body = _refused(
        _invoke_text(world, "iris-onnx", _record_with(value)), 400, "InvalidRequest", "does not fit float32"
    )
    assert body["errors"][0]["pointer"] == "/records/0/sepal_length"


def test_a_tensor_value_over_float32_is_a_400(world: dict[str, Any]) -> None:
    r = _invoke_text(world, "iris-tensors", '{"inputs": {"input": [[1e39, 3.5, 1.4, 0.2]]}}')
    body = _refused(r, 400, "InvalidRequest", "does not fit float32")
    assert body["errors"][0]["pointer"] == "/inputs/input/0/0"


@pytest.mark.parametrize("model", ["iris-onnx", "iris-tensors"])
def test_a_value_at_float32s_limit_that_overflows_the_model_is_a_422_not_a_502(
    world: dict[str, Any], model: str
) -> None:
    """In range, so the request is valid, but the float32 network's arithmetic overflows to NaN: the answer
    is that this input cannot be processed, not a 502 from the bar chart that meets the NaN first."""
    text = (
        _record_with("3.4028234663852886e38")
        if model == "iris-onnx"
        else '{"inputs": {"input": [[0.0, 0.0, 0.0, 3.4028234663852886e38]]}}'
    )
    body = _refused(_invoke_text(world, model, text), 422, "UnprocessableInput", "is NaN or infinite")
    assert "stage" not in body


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_tokens_are_a_400(world: dict[str, Any], token: str) -> None:
    body = _refused(
        _invoke_text(world, "iris-onnx", _record_with(token)),
        400,
        "InvalidRequest",
        "must be a finite number",
    )
    assert body["errors"][0]["pointer"] == "/records/0/sepal_length"


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (_record_with("1e39"), "application/json", "does not fit float32"),
        (_record_with("-1e39"), "application/json", "does not fit float32"),
        (_record_with("1" * 400), "application/json", "too large for a 64-bit float"),
        ("1e39,3.5,1.4,0.2\n", "text/csv", "does not fit float32"),
        ("1" * 400 + ",3.5,1.4,0.2\n", "text/csv", "must be a finite number"),
        ('{"inputs": {"input": [[1e39, 3.5, 1.4, 0.2]]}}', "iris-tensors", "fit float32"),
        (
            '{"inputs": {"input": [[1.5, %s, 1.4, 0.2]]}}' % ("1" * 400),
            "iris-tensors",
            "expected a nested list",
        ),
    ],
)
def test_the_runtime_answers_a_400_for_numbers_the_control_plane_let_through(
    world: dict[str, Any], body: str, content_type: str, needle: str
) -> None:
    """Second line of defence: an event that did not come through the API (or a manifest older than the
    dtype ranges) gets a 400-status reply from the runtime, not a crash or a 502."""
    model = "iris-tensors" if content_type == "iris-tensors" else "iris-onnx"
    media = "application/json" if content_type == "iris-tensors" else content_type
    reply = world["runtimes"][model].handle({"body": body, "content_type": media})
    assert reply["status"] == 400, reply
    assert needle in json.loads(reply["body"])["message"]


# --------------------------------------------------------------------------- sizes


def _kept_by_reference(world: dict[str, Any], body: bytes) -> None:
    """The function got the body by reference: the event names the kept object, which is the body."""
    _, event = world["container"].invoker.calls[-1]
    assert event["body"] == "" and event["body_bytes"] == len(body)
    key = event["body_url"].removeprefix("memory://").split("?")[0]
    assert key.startswith("spill/") and world["container"].data.objects[key] == body


def test_a_body_under_6_mb_whose_event_is_over_goes_by_reference(world: dict[str, Any]) -> None:
    """Every quote of the JSON body is escaped in the event: 5.8 MB of records become 6.4 MB, past
    Lambda's 6 MB, so the body is kept in the data bucket and the event names it (``body_url``)."""
    record = json.dumps(RECORD)
    body = '{"records": [' + ",".join([record] * (5_800_000 // (len(record) + 1))) + "]}"
    assert len(body) < MAX_SYNC_PAYLOAD
    _invoke_text(world, "iris-onnx", body)
    _kept_by_reference(world, body.encode())


def test_a_reply_over_6_mb_is_a_clear_error_from_the_runtime(world: dict[str, Any]) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2]] * 120_000  # 120,000 rows of a label and 3 probabilities: ~7 MB of JSON
    reply = world["runtimes"]["iris-tensors"].handle(
        {"body": json.dumps({"inputs": {"input": rows}}), "content_type": "application/json"}
    )
    assert reply["status"] == 502
    body = json.loads(reply["body"])
    assert body["code"] == "ResponseTooLarge"
    assert f"over the {MAX_RESPONSE_BYTES} bytes a synchronous Lambda answer can carry" in body["message"]


def test_a_reply_over_6_mb_is_a_clear_error_in_the_control_plane(world: dict[str, Any]) -> None:
    container = world["container"]
    big = {"status": 200, "content_type": "application/json", "body": "[" + "0," * 3_500_000 + "0]"}
    container.invoker.register("modelport-iris-tensors", lambda event: big)
    try:
        r = _invoke_text(world, "iris-tensors", '{"inputs": {"input": [[5.1, 3.5, 1.4, 0.2]]}}')
    finally:
        container.invoker.register("modelport-iris-tensors", world["runtimes"]["iris-tensors"].handle)
    _refused(r, 502, "ResponseTooLarge", "over Lambda's 6 MB")


def test_the_nesting_scan_agrees_with_the_parsed_depth() -> None:
    """``too_deep`` reads raw text: brackets inside strings (escaped quotes too) do not count."""
    import random

    from chalicelib.core.jsontext import too_deep

    def depth(value: Any) -> int:
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        return 0

    rng = random.Random(10)

    def make(level: int) -> Any:
        """A chain ``level`` deep with a few short side branches and strings full of brackets."""
        leaf = rng.choice([1, 2.5, None, '[{"\\\\', 'x"]]]', "[[[[", "}}"])
        if level == 0:
            return leaf
        inner = make(level - 1)
        side = [[leaf]] if rng.random() < 0.3 else []
        if rng.random() < 0.5:
            return [*side, inner] if rng.random() < 0.5 else [inner, *side]
        return {rng.choice(["a", "[", '"{', "\\"]): inner, "s": side}

    for _ in range(300):
        doc = make(rng.randint(0, 70))
        text = json.dumps(doc).encode()
        for limit in (depth(doc) - 1, depth(doc), 64):
            assert too_deep(text, max(limit, 0)) == (depth(doc) > max(limit, 0)), text[:200]
    assert too_deep(b"[" * 65, 64)  # unbalanced: judged by what it could reach
    assert not too_deep(b"[" * 10 + b"]" * 20, 64)


def test_a_2_mb_body_of_emoji_is_refused_by_the_protocol_before_it_is_kept(world: dict[str, Any]) -> None:
    """Each emoji is 4 bytes of UTF-8 and 12 in the event (a surrogate pair of ASCII escapes): the
    request is checked before it is kept for a reference, and a message does not repeat the value."""
    body = json.dumps({"records": [{**RECORD, "sepal_length": "\U0001f600" * 550_000}]}, ensure_ascii=False)
    assert len(body.encode()) < 2_300_000
    calls = len(world["container"].invoker.calls)
    refused = _refused(_invoke_text(world, "iris-onnx", body.encode()), 400, "InvalidRequest", "/records/0")
    assert len(json.dumps(refused)) < 2000 and len(world["container"].invoker.calls) == calls
