"""``GET /v1/models/{name}/logs``: the owner reads the lines of the model's functions (one request's by
trace id, or the newest); a shared stage function's lines of other models and other accounts' API lines
never reach them; a grantee or a stranger gets the plain 404; bad parameters are 400s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.core.clock import parse_utc
from chalicelib.core.config_file import DeployedFunction, ModelConfigFile
from chalicelib.memory.logs import MemoryLogReader
from chalicelib.settings import Settings
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy, new_account

NOW = "2026-12-03T10:00:00.000Z"
NOW_MS = int(parse_utc(NOW).timestamp() * 1000)
API_GROUP = "/aws/lambda/modelport-api-test"
SHARED = "modelport-steps-0123456789abcdef-post"
TRACE = "1-6762a3f1-0123456789abcdef01234567"
OTHER_TRACE = "1-6762a3f1-fedcba9876543210fedcba98"


def line(**fields: Any) -> str:
    return json.dumps(fields)


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    """alice owns iris (fused, plus a shared post stage written into its deployment), carol holds a grant,
    bob is a stranger; the log groups hold lines of iris, of another model and of other accounts."""
    container = wiring.memory_container(
        Settings(admin_key=ADMIN_KEY, api_log_group=API_GROUP), clock=lambda: NOW
    )
    wiring.override(container)
    with Client(app) as client:
        admin = Api(client, ADMIN_KEY)
        alice, alice_id = new_account(admin, "alice")
        bob, bob_id = new_account(admin, "bob")
        carol, carol_id = new_account(admin, "carol")
        config = (
            (ROOT / "examples/iris-onnx/modelport.yaml").read_text().replace("name: iris-onnx", "name: iris")
        )
        assert deploy(container, alice, "iris", bundle(config=config))["deployment"].state == "READY"
        assert alice.call("PUT", f"/v1/models/iris/grants/{carol_id}").status_code == 200
        record = container.models.get_version("iris", 1)
        manifest = ModelConfigFile.model_validate_json(record.manifest or "")
        assert manifest.deployment is not None
        shared = DeployedFunction(
            role="post", function_name=SHARED, function_arn=f"arn:aws:lambda:::{SHARED}"
        )
        deployment = manifest.deployment.model_copy(
            update={"functions": (*manifest.deployment.functions, shared)}
        )
        container.models.update_version(
            record.model_copy(
                update={"manifest": manifest.model_copy(update={"deployment": deployment}).model_dump_json()}
            )
        )
        logs = container.logs
        assert isinstance(logs, MemoryLogReader)
        at = NOW_MS - 60_000
        own = "/aws/lambda/modelport-iris"
        logs.write(own, at, "START RequestId: r1 Version: 1\n")
        logs.write(own, at + 1, line(message="invocation", model="iris", trace_id=TRACE, level="INFO"))
        logs.write(own, at + 2, "print from the model: " + "x" * 5000)
        logs.write(own, at + 3, line(message="invocation", model="iris", trace_id=OTHER_TRACE))
        logs.write(own, NOW_MS - 3 * 3_600_000, "three hours ago")
        logs.write(f"/aws/lambda/{SHARED}", at + 4, line(message="invocation", model="iris", trace_id=TRACE))
        logs.write(
            f"/aws/lambda/{SHARED}", at + 5, line(message="invocation", model="digits", trace_id=TRACE)
        )
        logs.write(f"/aws/lambda/{SHARED}", at + 6, "not json, of whichever model")
        logs.write(API_GROUP, at - 1, line(message="request", model="iris", account=alice_id, trace_id=TRACE))
        logs.write(API_GROUP, at + 7, line(message="request", model="iris", account=carol_id, trace_id=TRACE))
        logs.write(
            API_GROUP, at + 8, line(message="request", model="digits", account=alice_id, trace_id=TRACE)
        )
        yield {
            "alice": alice,
            "bob": bob,
            "carol": carol,
            "admin": admin,
            "alice_id": alice_id,
            "bob_id": bob_id,
        }
    wiring.override(None)


def messages(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["source"], entry["message"][:30]) for entry in doc["lines"]]


def test_one_requests_lines_from_the_api_the_shared_stage_and_the_model(world: dict[str, Any]) -> None:
    r = world["alice"].call("GET", f"/v1/models/iris/logs?trace=Root={TRACE}")
    assert r.status_code == 200, r.body
    doc = r.json_body
    assert (doc["model"], doc["version"], doc["trace_id"]) == ("iris", 1, TRACE)
    assert [(e["source"], json.loads(e["message"]).get("account") is not None) for e in doc["lines"]] == [
        ("api", True), ("fused", False), ("post", False),
    ]  # fmt: skip
    assert {e["trace_id"] for e in doc["lines"]} == {TRACE}
    assert doc["lines"][1] == {
        "at": "2026-12-03T09:59:00.001Z", "source": "fused", "function": "modelport-iris", "level": "INFO",
        "message": line(message="invocation", model="iris", trace_id=TRACE, level="INFO"), "truncated": False,
        "trace_id": TRACE,
    }  # fmt: skip


def test_the_newest_lines_hold_every_own_line_and_only_this_models_shared_ones(world: dict[str, Any]) -> None:
    doc = world["alice"].call("GET", "/v1/models/iris/logs").json_body
    assert messages(doc) == [
        ("api", '{"message": "request", "model"'),
        ("fused", "START RequestId: r1 Version: 1"),
        ("fused", '{"message": "invocation", "mod'),
        ("fused", "print from the model: " + "x" * 8),
        ("fused", '{"message": "invocation", "mod'),
        ("post", '{"message": "invocation", "mod'),
    ]
    long = doc["lines"][3]
    assert long["truncated"] is True and len(long["message"]) == 4096
    assert (
        "three hours ago"
        in messages(world["alice"].call("GET", "/v1/models/iris/logs?since=240").json_body)[0][1]
    )
    newest = world["alice"].call("GET", "/v1/models/iris/logs?limit=2").json_body
    assert [e["at"] for e in newest["lines"]] == ["2026-12-03T09:59:00.003Z", "2026-12-03T09:59:00.004Z"]


def test_an_admin_reads_every_accounts_api_lines_of_the_model(world: dict[str, Any]) -> None:
    doc = world["admin"].call("GET", f"/v1/models/iris/logs?trace={TRACE}").json_body
    assert [e["source"] for e in doc["lines"]] == ["api", "fused", "post", "api"]


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_a_stranger_and_a_grantee_get_the_plain_404(world: dict[str, Any], who: str) -> None:
    r = world[who].call("GET", "/v1/models/iris/logs")
    assert r.status_code == 404, r.body
    assert (
        r.json_body["message"] == world[who].call("GET", "/v1/models/nothing-here/logs").json_body["message"]
    )


@pytest.mark.parametrize(
    ("query", "pointer"),
    [
        ("trace=not-a-trace", "?trace"),
        ("trace=1-6762a3f1-0123", "?trace"),
        ("trace=" + "1" * 300, "?trace"),
        ("since=0", "?since"),
        ("since=1441", "?since"),
        ("since=-5", "?since"),
        ("since=1e9", "?since"),
        ("limit=0", "/limit"),
        ("limit=501", "?limit"),
        ("limit=99999999999", "/limit"),
        ("version=x", "/version"),
    ],
)
def test_bad_parameters_are_400s_that_point_at_them(world: dict[str, Any], query: str, pointer: str) -> None:
    r = world["alice"].call("GET", f"/v1/models/iris/logs?{query}")
    assert r.status_code == 400, r.body
    assert r.json_body["errors"][0]["pointer"] == pointer


def test_a_version_that_does_not_exist_is_a_404(world: dict[str, Any]) -> None:
    assert world["alice"].call("GET", "/v1/models/iris/logs?version=7").status_code == 404


def test_the_api_document_names_every_query_parameter_a_route_reads(world: dict[str, Any]) -> None:
    """The parameters a client may send are in /openapi.json, with their bounds."""
    import ast

    from chalicelib.api import http

    paths = world["alice"].call("GET", "/openapi.json").json_body["paths"]
    logs = {p["name"]: p for p in paths["/v1/models/{name}/logs"]["get"]["parameters"] if p["in"] == "query"}
    assert set(logs) == {"trace", "since", "limit", "version"}
    assert logs["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}
    assert logs["since"]["schema"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1440}
    documented = {
        (path, q["name"])
        for path, item in paths.items()
        for op in item.values()
        for q in op.get("parameters", [])
        if q["in"] == "query"
    }
    read = set()
    for module in ("invoke", "jobs", "logs", "usage"):
        tree = ast.parse((ROOT / "chalicelib" / "api" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "query_param":
                read.add(node.args[1].value)  # type: ignore[attr-defined]
    assert read <= {name for _, name in documented}, read - {name for _, name in documented}
    assert {q.name for q in http.INPUT_QUERY} == {"input_url", "webhook"}


def test_a_hostile_line_of_the_model_is_shown_as_text_not_parsed_into_a_500(world: dict[str, Any]) -> None:
    """A tenant's print can be JSON nested past Python's recursion limit: it is a line like any other."""
    logs = wiring.container().logs
    assert isinstance(logs, MemoryLogReader)
    deep = '{"model": "iris", "a": ' + "[" * 30_000 + "]" * 30_000 + "}"
    logs.write("/aws/lambda/modelport-iris", NOW_MS - 10, deep[:60_000])
    logs.write(f"/aws/lambda/{SHARED}", NOW_MS - 9, deep[:60_000])  # a shared stage: never this model's
    r = world["alice"].call("GET", "/v1/models/iris/logs?since=1")
    assert r.status_code == 200, r.body
    (line,) = [e for e in r.json_body["lines"] if e["at"] == "2026-12-03T09:59:59.990Z"]
    assert line["truncated"] is True and line["level"] is None and line["source"] == "fused"
    assert "2026-12-03T09:59:59.991Z" not in {e["at"] for e in r.json_body["lines"]}
