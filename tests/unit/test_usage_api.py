"""Cost per invocation (Server-Timing, job records) and ``GET /v1/usage``: per account and model, never
another account's; the recorder's buffering."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chalicelib import wiring
from chalicelib.core.config_file import ContainerAssociation, DeployedFunctions, PipelinePlan
from chalicelib.core.cost import bill_for, lambda_cost_pp, usd
from chalicelib.core.errors import FunctionFailed, Unavailable
from chalicelib.core.usage import UsageDay, bucket_of, quantile_ms
from chalicelib.core.wire import reply
from chalicelib.memory.stores import MemoryUsageStore
from chalicelib.services.usage import UsageRecorder
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy
from tests.unit import test_invoke_api
from tests.unit.test_jobs_api import run_queued
from tests.unit.test_manifest import iris_manifest

world = test_invoke_api.world  # the memory container, iris (512 MB, x86_64) deployed on a fake function
RECORD = test_invoke_api.RECORD
TODAY = "2026-12-03"


def answering(runs: list[dict[str, Any]], status: int = 200) -> Any:
    """The fake iris function, its replies reporting ``runs`` (and answering ``status``)."""
    fake = test_invoke_api.FakeIris()

    def handle(event: Any) -> dict[str, Any]:
        answer = fake(event) if status == 200 else dict(reply(status, '{"code": "X", "message": "no"}'))
        return {**answer, "runs": runs}

    return handle


def on_day(world: dict[str, Any], day: str) -> None:
    """The same stores behind a clock fixed on ``day`` (the services are rebuilt on it)."""
    world["container"] = replace(world["container"], clock=lambda: f"{day}T10:00:00.000Z")
    wiring.override(world["container"])


def usage(api: Api, query: str = "") -> Any:
    return api.call("GET", f"/v1/usage{query}")


def test_server_timing_carries_the_billed_ms_and_cost_of_the_reported_run(world: dict[str, Any]) -> None:
    container = world["container"]
    container.invoker.register("modelport-iris", answering([{"role": "fused", "ms": 2.5, "init_ms": 800.2}]))
    r = world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]})
    assert r.status_code == 200, r.body
    cost = lambda_cost_pp(803, 512, "x86_64")  # ceil(2.5 + 800.2) ms at 512 MB
    assert cost == 200_000 + 6_691_680  # 0.4015 GB-s x $0.0000166667 = 6,691,680.05 pp
    assert r.headers["Server-Timing"].endswith(f'post;dur=1.500, billed;dur=803, cost;desc="{usd(cost)}"')
    oip = world["alice"].call(
        "POST",
        "/v2/models/iris/infer",
        {"inputs": [{"name": n, "shape": [1], "datatype": "FP32", "data": [v]} for n, v in RECORD.items()]},
    )
    assert oip.status_code == 200, oip.body
    assert oip.headers["Server-Timing"].endswith(f'billed;dur=803, cost;desc="{usd(cost)}"')


def test_a_chain_bills_each_stage_at_its_functions_memory_and_the_express_execution() -> None:
    manifest = iris_manifest()
    chained = manifest.model_copy(
        update={
            "pipeline_plan": PipelinePlan(mode="chained", reason="test", shared_steps=True),
            "container": ContainerAssociation(
                environment_image="e", image_uri="i", image_digest="d", size_bytes=1, steps_image="s"
            ),
            "deployment": DeployedFunctions(mode="chained", functions=(), state_machine_arn="arn:sm"),
        }
    )
    runs = [{"role": "pre", "ms": 0.5}, {"role": "model", "ms": 3.2}, {"role": "post", "ms": 6.0}]
    doc = {"runs": runs, "execution": {"billed_ms": 100, "billed_mb": 64}}
    bill = bill_for(chained, doc, wall_ms=25.0)
    memory = chained.environment.memory_mb
    assert [(r.role, r.billed_ms, r.memory_mb) for r in bill.runs] == [
        ("pre", 1, 1024),  # the shared stage function's memory
        ("model", 4, memory),
        ("post", 6, 1024),
    ]
    stages = lambda_cost_pp(1, 1024, "x86_64") + lambda_cost_pp(4, memory, "x86_64")
    stages += lambda_cost_pp(6, 1024, "x86_64")
    assert bill.cost_pp == stages + 1_104_167  # $1/1M + 100 ms x 64 MB of Express
    assert bill.billed_ms == 11 and not bill.estimated
    unreported = bill_for(chained, {"runs": runs}, wall_ms=250.0)  # no billingDetails: the wall time
    assert unreported.execution is not None and unreported.execution.billed_ms == 300


def test_usage_adds_up_per_account_and_model_and_never_shows_another_account(
    world: dict[str, Any],
) -> None:
    on_day(world, TODAY)
    container, alice, bob = world["container"], world["alice"], world["bob"]
    config = (ROOT / "examples/iris-onnx/modelport.yaml").read_text().replace("name: iris-onnx", "name: lily")
    assert deploy(container, alice, "lily", bundle(config=config))["deployment"].state == "READY"
    container.invoker.register("modelport-iris", answering([{"role": "fused", "ms": 1.5}]))
    container.invoker.register("modelport-lily", answering([{"role": "fused", "ms": 9.2}]))
    for _ in range(2):
        assert alice.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 200
    assert alice.call("POST", "/v1/models/lily/invoke", {"records": [RECORD]}).status_code == 200
    assert alice.call("PUT", f"/v1/models/iris/grants/{world['bob_id']}").status_code == 200
    assert bob.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 200
    assert bob.call("POST", "/v1/models/iris/invoke", {"records": [{"x": 1}]}).status_code == 400
    assert bob.call("POST", "/v1/models/lily/invoke", {"records": [RECORD]}).status_code == 404  # not counted

    mine = usage(alice, f"?from={TODAY}&to={TODAY}")
    assert mine.status_code == 200, mine.body
    doc = mine.json_body
    assert doc["from"] == doc["to"] == TODAY
    iris_cost, lily_cost = lambda_cost_pp(2, 512, "x86_64"), lambda_cost_pp(10, 512, "x86_64")
    assert [(m["model"], m["invocations"], m["billed_ms"], m["cost"]["pico_usd"]) for m in doc["models"]] == [
        ("iris", 2, 4, 2 * iris_cost),
        ("lily", 1, 10, lily_cost),
    ]
    assert doc["total"]["cost"] == {
        "usd": usd(2 * iris_cost + lily_cost),
        "pico_usd": 2 * iris_cost + lily_cost,
    }
    assert doc["total"]["rejected"] == 0 and doc["models"][0]["latency_ms"]["p50"] is not None
    assert doc["models"][0]["days"][0]["day"] == TODAY

    theirs = usage(bob, f"?from={TODAY}&to={TODAY}").json_body
    assert theirs["account"] == world["bob_id"]
    ((iris,),) = [theirs["models"]]
    assert (iris["model"], iris["invocations"], iris["rejected"], iris["cost"]["pico_usd"]) == (
        "iris",
        1,
        1,
        iris_cost,
    )
    assert usage(bob, f"?model=lily&to={TODAY}").json_body["models"] == []
    alice_id = doc["account"]
    refused = usage(bob, f"?account={alice_id}")
    assert refused.status_code == 403 and "admin" in refused.json_body["message"]
    admin = Api(alice.client, ADMIN_KEY)
    seen = usage(admin, f"?account={alice_id}&from={TODAY}&to={TODAY}&model=lily").json_body
    assert [m["model"] for m in seen["models"]] == ["lily"] and seen["account"] == alice_id


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("?from=yesterday", "from='yesterday' is not a date"),
        ("?to=2026-13-01", "to='2026-13-01' is not a date"),
        ("?from=2026-12-03T00:00:00Z", "is not a date"),
        ("?from=2026-12-03&to=2026-12-01", "is after"),
        ("?from=2024-01-01&to=2026-12-01", "more than 366 days"),
        ("?model=Not_A_Name", "is not a model name"),
    ],
)
def test_bad_usage_queries_are_400_with_what_is_wrong(world: dict[str, Any], query: str, needle: str) -> None:
    r = usage(world["alice"], query)
    assert r.status_code == 400 and r.json_body["code"] == "InvalidRequest", r.body
    assert needle in r.json_body["message"]


def test_function_errors_and_answered_4xx_are_counted_apart(world: dict[str, Any]) -> None:
    container, alice = world["container"], world["alice"]
    container.invoker.register("modelport-iris", answering([{"role": "fused", "ms": 1.0}], status=422))
    assert alice.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 422
    world["fake"].fail = FunctionFailed("boom")
    container.invoker.register("modelport-iris", world["fake"])
    assert alice.call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 502
    total = usage(alice).json_body["total"]
    assert (total["invocations"], total["client_errors"], total["errors"]) == (2, 1, 1)
    assert total["cost"]["pico_usd"] > 2 * 200_000  # two requests and their (estimated) duration


def test_a_job_records_what_its_run_cost(world: dict[str, Any]) -> None:
    container, alice = world["container"], world["alice"]
    container.invoker.register("modelport-iris", answering([{"role": "fused", "ms": 4.0}]))
    job_id = alice.call("POST", "/v1/models/iris/jobs", {"records": [RECORD]}).json_body["job_id"]
    run_queued(world)
    done = alice.call("GET", f"/v1/jobs/{job_id}").json_body
    cost = lambda_cost_pp(4, 512, "x86_64")
    assert done["cost"] == {"billed_ms": 4, "usd": usd(cost), "pico_usd": cost}
    assert usage(alice).json_body["total"]["invocations"] == 1


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Flaky(MemoryUsageStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def add(self, deltas: Any) -> None:
        if self.down:
            raise Unavailable("the table did not answer")
        super().add(deltas)


def test_the_recorder_writes_once_a_second_or_per_many_records_and_keeps_what_a_write_missed() -> None:
    store, clock = Flaky(), Monotonic()
    recorder = UsageRecorder(store, lambda: f"{TODAY}T00:00:00.000Z", max_records=5, monotonic=clock)
    for _ in range(3):
        recorder.record("a", "iris", "ok", latency_ms=2.0)
        clock.now += 0.2
    assert store.adds == 0  # 0.6 s: nothing written yet
    clock.now += 0.4
    recorder.record("a", "iris", "ok", latency_ms=2.0)  # the request past 1 s writes, once per key
    recorder.record("a", "lily", "rejected")
    assert store.adds == 1
    for _ in range(4):
        recorder.record("a", "iris", "ok")
    assert store.adds == 3  # the 5th record since that write: iris and lily, one write each
    (iris, lily) = sorted(store.query("a", TODAY, TODAY), key=lambda d: d.model)
    assert (iris.invocations, lily.rejected) == (8, 1)
    assert iris.latency == {bucket_of(2.0): 4}

    store.down = True
    clock.now += 5
    recorder.record("a", "iris", "error")
    assert store.adds == 3  # the write failed: kept, and the request did not fail
    store.down = False
    assert recorder.flush() == 1
    assert store.query("a", TODAY, TODAY, model="iris")[0].errors == 1
    assert recorder.flush() == 0


def test_latency_quantiles_are_read_back_within_a_bucket() -> None:
    latencies = [1.0] * 50 + [10.0] * 49 + [500.0]
    histogram: dict[int, int] = {}
    for ms in latencies:
        histogram[bucket_of(ms)] = histogram.get(bucket_of(ms), 0) + 1
    for q, want in ((0.5, 1.0), (0.99, 10.0), (1.0, 500.0)):
        got = quantile_ms(histogram, q)
        assert got is not None and abs(got / want - 1) < 0.13, (q, got)  # a bucket is 12 % wide
    assert quantile_ms({}, 0.5) is None
    assert bucket_of(0.0) == 0 and bucket_of(1e9) == bucket_of(1e7)
    assert UsageDay(account_id="a", model="m", day=TODAY).plus(
        UsageDay(account_id="a", model="m", day=TODAY, latency={3: 2}, cost_pp=1)
    ).latency == {3: 2}


def test_the_cli_prints_a_line_per_model_and_the_total(world: dict[str, Any]) -> None:
    from chalicelib.cli_jobs import usage_lines

    world["container"].invoker.register("modelport-iris", answering([{"role": "fused", "ms": 1.0}]))
    assert world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 200
    lines = usage_lines(usage(world["alice"]).json_body)
    assert lines[0].startswith("usage of acct_") and "USD" in lines[1]
    assert lines[2].split()[:3] == ["iris", "1", "0"] and lines[-1].split()[:2] == ["total", "1"]
    assert lines[2].endswith(usd(lambda_cost_pp(1, 512, "x86_64")))


def test_what_a_process_holds_is_written_when_its_container_is_replaced_or_it_ends(
    world: dict[str, Any],
) -> None:
    from chalicelib.api import deps

    container = world["container"]
    store = container.usage
    assert isinstance(store, MemoryUsageStore)
    container.invoker.register("modelport-iris", answering([{"role": "fused", "ms": 1.0}]))
    deps.services().recorder.max_age_s = 3600  # held, however slow this machine is today
    assert world["alice"].call("POST", "/v1/models/iris/invoke", {"records": [RECORD]}).status_code == 200
    writes = store.adds
    wiring.override(replace(container))  # the same stores, a new container: services are rebuilt
    deps.services()
    assert store.adds == writes + 1  # the old process's counts, written on the way out
    deps.services().recorder.record("acct", "iris", "rejected")
    deps._flush_usage()  # what atexit runs
    assert store.query("acct", "0000-01-01", "9999-12-31")[0].rejected == 1
