"""Invocation overhead, hop by hop, on the local stack (the acceptance bench of issue #5).

The model is iris ONNX with only ``tabular`` pre and ``labels`` post (the bar chart alone costs ~6 ms,
which would hide every overhead measured here), written into a temp dir twice: ``pipeline: fused`` and
``pipeline: chained``. The stack runs in this process, started by ``LocalStack``: moto + the edge + the
Lambda emulator (process launcher: awslambdaric in a process), the infrastructure from
``create_infrastructure``, the control plane's real adapters (``aws_container`` pointed at the edge), the
Chalice app served by ``ApiServer`` and the event pump. Each model version is deployed as ``modelport
deploy`` does (``POST /v1/models/{name}/versions`` over HTTP, the bundle uploaded to S3, the S3 event
pumped to the deploy service), which names a process image and creates the functions with
``LambdaFunctionManager``.

Layers, each one hop more than the one above it (measured interleaved, in blocks, so each sees the same
machine load):

- ``raw``: ``onnxruntime`` ``session.run`` on one row;
- ``runtime``: ``Runtime.handle`` in this process (decode, tabular, model, labels, encode);
- ``emulator``: ``LambdaEmulator.invoke`` in process: the Runtime API round trip to awslambdaric;
- ``edge http``: an unsigned keep-alive ``POST .../invocations`` to the edge: its HTTP hop;
- ``boto3``: ``lambda.invoke`` through the edge (signing, serialization, parsing);
- ``invoker``: the control plane's ``LambdaInvoker.invoke``;
- ``api``: ``POST /v1/models/<name>/invoke`` on a keep-alive connection to the served Chalice app
  (authorizer, grant check, validation, the invoker, the answer).

Chained: ``start_sync_execution`` through the edge (its in-process interpreter, and moto's for
comparison) and the API. Then requests/s at concurrency 8 through the API. All traffic is to
127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import markers, write_section  # noqa: E402 - bench/results.py, beside this script

NAME = "invoke_overhead"
RECORD = {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5}
ROLE = "arn:aws:iam::123456789012:role/modelport-functions"
CONFIG = """name: {name}
description: iris ONNX without its chart, for the invoke overhead bench
framework: onnx
artifacts: [model.onnx]
labels: [setosa, versicolor, virginica]
environment:
  memory_mb: 1024
  timeout_s: 10
processing:
  pre:
    - tabular: {{features: [sepal_length, sepal_width, petal_length, petal_width]}}
  post:
    - labels
pipeline: {mode}
"""
TARGETS = {
    "fused_p50_ms": (1.5, 1.0),
    "rps_c8": (800, 1200),
    "function_overhead_us": 50,
    "chained_over_fused": 3.0,
}


# --------------------------------------------------------------------------- measuring


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Series:
    name: str
    what: str
    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    def row(self) -> dict[str, float]:
        return {
            "n": len(self.ms),
            "p50": statistics.median(self.ms),
            "p99": pct(self.ms, 0.99),
            "p999": pct(self.ms, 0.999),
            "cpu": statistics.median(self.cpu_ms) if self.cpu_ms else float("nan"),
        }


def interleaved(
    layers: list[tuple[Series, Callable[[], object]]], total: int, budget_s: float, block: int = 50
) -> None:
    """Run every layer ``total`` times after a warm-up, in blocks of ``block`` taking turns, within
    ``budget_s`` overall (then stop where it is)."""
    for _, call in layers:
        for _ in range(20):
            call()
    deadline = time.monotonic() + budget_s
    while any(len(s.ms) < total for s, _ in layers) and time.monotonic() < deadline:
        for series, call in layers:
            for _ in range(min(block, total - len(series.ms))):
                c0, t0 = time.thread_time(), time.perf_counter()
                call()
                series.ms.append((time.perf_counter() - t0) * 1000)
                series.cpu_ms.append((time.thread_time() - c0) * 1000)


def concurrent(
    make_call: Callable[[], Callable[[], object]], workers: int, total: int, budget_s: float
) -> dict[str, float]:
    """Requests/s with ``workers`` threads, each with its own connection, ``total`` requests at most."""
    calls = [make_call() for _ in range(workers)]
    warm = [threading.Thread(target=lambda c=c: [c() for _ in range(10)]) for c in calls]
    for t in warm:  # all at once, so that every environment the run needs is started before it
        t.start()
    for t in warm:
        t.join()
    left = [total]
    lock = threading.Lock()
    latencies: list[float] = []
    failures = [0]
    deadline = time.monotonic() + budget_s

    def worker(call: Callable[[], object]) -> None:
        mine: list[float] = []
        while time.monotonic() < deadline:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                call()
            except Exception:  # counted, not fatal: the figure says how many failed
                failures[0] += 1
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(c,)) for c in calls]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies),
        "p99": pct(latencies, 0.99),
        "failures": failures[0],
    }


# --------------------------------------------------------------------------- the stack


def model_dir(root: Path, name: str, mode: str) -> Path:
    target = root / name
    target.mkdir(parents=True)
    shutil.copyfile(ROOT / "examples/iris-onnx/model.onnx", target / "model.onnx")
    (target / "modelport.yaml").write_text(CONFIG.format(name=name, mode=mode), encoding="utf-8")
    return target


class Http:
    """One keep-alive connection."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        self.conn.request(method, path, body, headers)
        response = self.conn.getresponse()
        return response.status, response.read()


@contextmanager
def local_stack(root: Path) -> Iterator[dict[str, Any]]:
    """``LocalStack`` in this process: process environments on the bench's own process images (the
    memory image builder names them, ``deploy`` writes them), the API in process, no log shipping."""
    from chalicelib.local.launchers import ProcessImages
    from chalicelib.local.stack import LocalStack

    images = ProcessImages(root / "process-images")
    stack = LocalStack(
        edge_port=0, api_port=0, launcher="process", registry=False, api_process=False,
        emulator_options={"max_concurrency": 8}, image_builder="memory", process_images=images,
        ship_logs=False,
    ).start()  # fmt: skip
    container = stack.container
    try:
        yield {
            "edge": stack.edge,
            "emulator": stack.emulator,
            "images": images,
            "container": container,
            "api_url": stack.api_url,
            "endpoint_url": stack.endpoint_url,
            "admin": stack.admin_key,
            "lambda": container.invoker.lambda_client,
            "sfn": container.invoker.sfn_client,
        }
    finally:
        stack.stop()


def deploy(stack: dict[str, Any], directory: Path, key: str) -> dict[str, Any]:
    """Through the control plane, as ``modelport deploy`` does: a version over HTTP, the bundle uploaded,
    the S3 event to the deploy service by the stack's event pump; the image it builds
    (``memory/<name>:v1``) is registered as a process image first."""
    from chalicelib.client import Client, Connection
    from chalicelib.client import deploy as deploy_dir
    from chalicelib.core.config_file import ModelConfigFile
    from chalicelib.services.intake import config_file_for_dir

    name = directory.name
    stack["images"].write(f"memory/{name}:v1", directory, config_file_for_dir(directory))
    client = Client(Connection(stack["api_url"], key, stack["endpoint_url"]))
    outcome = deploy_dir(client, directory, timeout_s=300)
    assert outcome.status == "READY", outcome.reason
    return ModelConfigFile.model_validate(outcome.config).deployment.model_dump()  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from chalicelib.aws.invoke import LambdaInvoker
    from chalicelib.core.config_file import DeployedFunctions
    from chalicelib.core.wire import JSON, invocation_event
    from chalicelib.runtime.handler import load
    from chalicelib.runtime.layout import prepare_model_dir
    from chalicelib.services.intake import config_file_for_dir

    out: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="invoke-overhead-") as tmp:
        root = Path(tmp)
        fused_dir = model_dir(root / "models", "iris-fused", "fused")
        chained_dir = model_dir(root / "models", "iris-chained", "chained")
        with local_stack(root) as stack:
            admin = Http(stack["api_url"])
            status, body = admin.call(
                "POST", "/v1/accounts", json.dumps({"name": "bench"}).encode(),
                {"Authorization": f"Bearer {stack['admin']}", "Content-Type": "application/json"},
            )  # fmt: skip
            assert status == 201, body
            key = json.loads(body)["api_key"]
            fused = deploy(stack, fused_dir, key)
            chained = deploy(stack, chained_dir, key)
            out["chained_mode"] = chained["mode"]

            # the same event the control plane sends (InvokeService)
            request = json.dumps({"records": [RECORD]})
            event = invocation_event(request, JSON, JSON)
            payload = json.dumps(event).encode()
            fn = fused["functions"][0]
            arn, version = fn["function_arn"], fn["version"]

            session = ort.InferenceSession(str(fused_dir / "model.onnx"), providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: np.array([[6.4, 3.2, 4.5, 1.5]], dtype=np.float32)}
            runtime = load(prepare_model_dir(fused_dir, config_file_for_dir(fused_dir), root / "layout"))
            emulator, lam = stack["emulator"], stack["lambda"]
            edge_http = Http(stack["edge"].url)
            invoke_path = f"/2015-03-31/functions/{fn['function_name']}/invocations?Qualifier={version}"
            invoker = LambdaInvoker(lam, stack["sfn"])
            boto3_invoker = LambdaInvoker(lam, stack["sfn"], direct=False)
            fused_dep = DeployedFunctions.model_validate(fused)
            api = Http(stack["api_url"])
            api_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            body_bytes = json.dumps({"records": [RECORD]}).encode()

            def api_call(name: str, conn: Http) -> Callable[[], object]:
                def call() -> object:
                    status, answer = conn.call("POST", f"/v1/models/{name}/invoke", body_bytes, api_headers)
                    if status != 200:
                        raise RuntimeError(f"{status}: {answer[:300]!r}")
                    return answer

                return call

            def edge_call() -> object:
                status, answer = edge_http.call(
                    "POST", invoke_path, payload, {"Content-Type": "application/json"}
                )
                assert status == 200, answer
                return answer

            def boto3_call() -> object:
                return lam.invoke(FunctionName=arn, Qualifier=version, Payload=payload)["Payload"].read()

            check = json.loads(api_call("iris-fused", api)())
            assert check["predictions"][0][0]["label"] == "versicolor", check

            layers = [
                (Series("raw", "onnxruntime session.run, 1 row"), lambda: session.run(None, feed)),
                (Series("runtime", "Runtime.handle in process"), lambda: runtime.handle(event)),
                (Series("emulator", "LambdaEmulator.invoke (Runtime API round trip)"),
                 lambda: emulator.invoke(arn, payload, qualifier=version)),
                (Series("edge http", "keep-alive POST .../invocations to the edge"), edge_call),
                (Series("boto3", "boto3 lambda.invoke through the edge"), boto3_call),
                (Series("invoker", "LambdaInvoker.invoke (fused)"), lambda: invoker.invoke(fused_dep, event)),
                (Series("invoker via boto3", "the same through boto3 (direct=False)"),
                 lambda: boto3_invoker.invoke(fused_dep, event)),
                (Series("api", "POST /v1/models/iris-fused/invoke"), api_call("iris-fused", api)),
            ]  # fmt: skip
            machine = chained["state_machine_arn"]
            sfn = stack["sfn"]
            chained_deployment = DeployedFunctions.model_validate(chained)
            layers += [
                (Series("sfn sync", "start_sync_execution through the edge (in-process ASL)"),
                 lambda: sfn.start_sync_execution(stateMachineArn=machine, input=json.dumps(event))),
                (Series("invoker chained", "LambdaInvoker.invoke (chained)"),
                 lambda: invoker.invoke(chained_deployment, event)),
                (Series("invoker chained via boto3", "the same through boto3 (direct=False)"),
                 lambda: boto3_invoker.invoke(chained_deployment, event)),
                (Series("api chained", "POST /v1/models/iris-chained/invoke"),
                 api_call("iris-chained", api)),
            ]  # fmt: skip
            interleaved(layers, args.requests, args.seconds)
            out["layers"] = [(s.name, s.what, s.row()) for s, _ in layers]

            moto_series = Series("sfn sync (moto)", "start_sync_execution via moto's interpreter")
            stack["edge"].fast_sync = False
            try:
                interleaved(
                    [
                        (
                            moto_series,
                            lambda: sfn.start_sync_execution(
                                stateMachineArn=machine, input=json.dumps(event)
                            ),
                        )
                    ],
                    args.moto_requests,
                    args.seconds / 4,
                    block=args.moto_requests,
                )
            finally:
                stack["edge"].fast_sync = True
            out["moto"] = (moto_series.name, moto_series.what, moto_series.row())

            out["calls_per_api_invoke"] = count_calls(stack["container"], api_call("iris-fused", api))
            url = stack["api_url"]
            modes = ("fused", "chained")
            with api_process(stack["edge"].url) as split_url:
                # the one-process stack and the split one take turns, so that both see the same load
                rounds: dict[str, list[dict[str, float]]] = {}
                per_round = argparse.Namespace(
                    **{**vars(args), "c8_requests": max(200, args.c8_requests // args.rounds)}
                )
                warm_up = argparse.Namespace(**{**vars(args), "c8_requests": 400})
                for mode in modes:  # a round not counted: environments up to the concurrency start here
                    for target in (url, split_url):
                        load_in_child(target, f"/v1/models/iris-{mode}/invoke", key, body_bytes, warm_up)
                for _ in range(args.rounds):
                    for mode in modes:
                        for kind, target in (("c8_child", url), ("c8_split", split_url)):
                            run_ = load_in_child(
                                target, f"/v1/models/iris-{mode}/invoke", key, body_bytes, per_round
                            )
                            rounds.setdefault(f"{kind}/api {mode}", []).append(run_)
            out["environments"] = {
                f["function_name"]: emulator.started(f["function_name"])
                for dep in (fused, chained)
                for f in dep["functions"]
            }
            for name, runs_ in rounds.items():
                kind, label = name.split("/")
                out.setdefault(kind, {})[label] = combine(runs_)
            out["c8"] = {
                "api fused": concurrent(
                    lambda: api_call("iris-fused", Http(url)), 8, args.c8_requests, args.seconds / 2
                ),
            }
            out["c8"]["api chained"] = concurrent(
                lambda: api_call("iris-chained", Http(url)), 8, args.c8_requests, args.seconds / 2
            )
            out["c8"]["boto3 fused"] = concurrent(
                lambda: _boto3_call(stack["edge"].url, arn, version, payload),
                8,
                args.c8_requests,
                args.seconds / 2,
            )
    out["load_after"] = os.getloadavg()
    return out


def combine(runs: list[dict[str, float]]) -> dict[str, float]:
    """Rounds of one configuration: the totals, the median round's req/s and latency."""
    middle = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    return {
        "requests": sum(r["requests"] for r in runs),
        "seconds": sum(r["seconds"] for r in runs),
        "rps": middle["rps"],
        "rps_all": [round(r["rps"]) for r in runs],
        "p50": middle["p50"],
        "p99": middle["p99"],
        "failures": sum(r["failures"] for r in runs),
        "stack_cpu_ms": statistics.median(r["stack_cpu_ms"] for r in runs),
    }


def load_in_child(url: str, path: str, key: str, body: bytes, args: argparse.Namespace) -> dict[str, float]:
    """Concurrency 8 from a process of its own, as real clients are: the load generator's own Python
    then does not share the stack's GIL. ``stack_cpu_ms``: this process's CPU (the API server, the
    invoker, the edge, the emulator, the Runtime API servers) per request."""
    import resource
    import subprocess

    command = [
        sys.executable, __file__, "--load", url, path, "--c8-requests", str(args.c8_requests),
        "--seconds", str(args.seconds / 2),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF)
    done = subprocess.run(
        command, input=json.dumps({"key": key, "body": body.decode()}), capture_output=True, text=True,
        timeout=args.seconds + 60, check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["stack_cpu_ms"] = cpu_s * 1000 / max(1, result["requests"] + 80)  # + the warm-up calls
    return result


@contextmanager
def api_process(edge_url: str) -> Iterator[str]:
    """The control plane's API served by a process of its own (its own adapters, pointed at the same
    edge, so the same tables), as on AWS, where the API and the model run in different Lambdas."""
    import subprocess

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-api", edge_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the API process did not start: {url!r}")
        yield url
    finally:
        if child.stdin is not None:
            child.stdin.close()  # its signal to stop
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _serve_api(edge_url: str) -> int:
    from dataclasses import replace

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    from chalicelib import wiring
    from chalicelib.local.api import ApiServer
    from chalicelib.settings import Settings

    wiring.override(wiring.aws_container(replace(Settings(), endpoint_url=edge_url)))
    import app as app_module

    with ApiServer(app_module.app) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the bench closes our stdin
    return 0


def _child(url: str, path: str, args: argparse.Namespace) -> int:
    given = json.loads(sys.stdin.read())
    headers = {"Authorization": f"Bearer {given['key']}", "Content-Type": "application/json"}
    body = given["body"].encode()

    def make() -> Callable[[], object]:
        conn = Http(url)

        def call() -> object:
            status, answer = conn.call("POST", path, body, headers)
            if status != 200:
                raise RuntimeError(f"{status}: {answer[:300]!r}")
            return answer

        return call

    print(json.dumps(concurrent(make, 8, args.c8_requests, args.seconds)))
    return 0


def _boto3_call(url: str, arn: str, version: str, payload: bytes) -> Callable[[], object]:
    import boto3

    client = boto3.session.Session(region_name="us-east-1").client("lambda", endpoint_url=url)
    return lambda: client.invoke(FunctionName=arn, Qualifier=version, Payload=payload)["Payload"].read()


def count_calls(container: Any, call: Callable[[], object]) -> dict[str, int]:
    """The AWS calls one API invoke makes, by service.operation (botocore's before-call events)."""
    counts: dict[str, int] = {}
    clients = {id(c): c for c in _clients(container)}

    def hook(model: Any, **_: Any) -> None:
        name = f"{model.service_model.service_name}.{model.name}"
        counts[name] = counts.get(name, 0) + 1

    for client in clients.values():
        client.meta.events.register("before-call", hook)
    try:
        for _ in range(10):
            call()
    finally:
        for client in clients.values():
            client.meta.events.unregister("before-call", hook)
    return {k: v // 10 for k, v in sorted(counts.items()) if v // 10}


def _clients(obj: Any, depth: int = 0) -> Iterator[Any]:
    if depth > 3:
        return
    for value in vars(obj).values() if hasattr(obj, "__dict__") else ():
        if hasattr(value, "meta") and hasattr(value.meta, "events"):
            yield value
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("chalicelib"):
            yield from _clients(value, depth + 1)


# --------------------------------------------------------------------------- the report


def section(out: dict[str, Any], args: argparse.Namespace, label: str) -> str:
    begin, end = markers(NAME)
    rows = {name: row for name, _, row in out["layers"]}
    lines = [
        begin,
        "## Invocation overhead, hop by hop (issue #5)",
        "",
        f"`python bench/invoke_overhead.py --requests {args.requests}` ({label}) on {platform.machine()}, "
        f"CPython {platform.python_version()}, {time.strftime('%Y-%m-%d')}. iris ONNX with `tabular` pre and "
        "`labels` post only (no chart); process launcher; stack in one process (moto + edge + emulator + "
        f"ApiServer). Load average (1 min) {out['load_before'][0]:.2f} before, {out['load_after'][0]:.2f} "
        "after, on 2 cores shared with other work. Concurrency 1, interleaved blocks of 50 after 20 "
        "warm-up calls; CPU is this thread's CPU per call (the client side).",
        "",
        "| layer | what | n | p50 ms | p99 ms | p99.9 ms | client CPU ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    layer_rows = list(out["layers"]) + ([out["moto"]] if out.get("moto") else [])
    for name, what, row in layer_rows:
        lines.append(
            f"| {name} | {what} | {row['n']} | {row['p50']:.3f} | {row['p99']:.3f} | {row['p999']:.3f} "
            f"| {row['cpu']:.3f} |"
        )
    lines += [
        "",
        "Concurrency 8 (8 threads, a keep-alive connection each, after 10 calls each all at once; bounded "
        "count and time). `own process`: the load generator runs in a process of its own, as clients do; "
        "`in process`: its threads share the stack's interpreter (and GIL); `API in its own process too`: "
        "the Chalice app served by a second process (its own adapters, the same edge and tables), as on "
        "AWS where the API and the model are different Lambdas (stack CPU then excludes the API's):",
        "",
    ]
    lines += [
        "| path | requests | s | req/s | p50 ms | p99 ms | failures | stack CPU ms/request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    runs = [(f"{k} (own process)", v) for k, v in out["c8_child"].items()]
    runs += [(f"{k} (API in its own process too)", v) for k, v in out.get("c8_split", {}).items()]
    runs += [(f"{k} (in process)", v) for k, v in out["c8"].items()]
    for name, c in runs:
        if "rps_all" in c:
            name += f" (median of rounds {'/'.join(str(r) for r in c['rps_all'])} req/s)"
        lines.append(
            f"| {name} | {c['requests']} | {c['seconds']:.1f} | {c['rps']:.0f} | {c['p50']:.2f} "
            f"| {c['p99']:.2f} | {c['failures']} | {c.get('stack_cpu_ms', float('nan')):.2f} |"
        )
    started = ", ".join(f"{k} {v}" for k, v in out.get("environments", {}).items())
    lines += ["", f"Execution environments started per function by the end (cold starts): {started}."]
    fused_p50 = rows["api"]["p50"]
    overhead_us = (rows["runtime"]["p50"] - rows["raw"]["p50"]) * 1000
    lines += [
        "",
        "Against the targets:",
        "",
        "| target | goal (stretch) | measured |",
        "| --- | --- | ---: |",
    ]
    lines.append(f"| fused p50 through the API | ≤ 1.5 ms (1 ms) | {fused_p50:.2f} ms |")
    lines.append(
        f"| req/s at concurrency 8, fused API | ≥ 800 (1200) | {out['c8_child']['api fused']['rps']:.0f} "
        f"(stack in one process); {out['c8_split']['api fused']['rps']:.0f} (API in its own process) |"
    )
    lines.append(
        f"| function overhead over the raw model call (runtime - raw, p50) | ≤ 50 µs | {overhead_us:.0f} µs |"
    )
    if "api chained" in rows:
        ratio = rows["api chained"]["p50"] / fused_p50
        lines.append(f"| chained p50 ÷ fused p50 (API) | ≤ 3x | {ratio:.2f}x |")
    else:
        lines.append(
            "| chained p50 ÷ fused p50 (API) | ≤ 3x | TODO: chained mode not in the tree when measured |"
        )
    calls = ", ".join(f"{k} x{v}" for k, v in out["calls_per_api_invoke"].items()) or "none"
    lines += [
        "",
        f"boto3 calls per warm API invoke (botocore before-call events): {calls}; the Lambda Invoke itself "
        "goes through LambdaInvoker's own signed request when the client allows it (not a boto3 call).",
        "",
    ]
    lines += where_the_time_goes(rows)
    lines.append(end)
    return "\n".join(lines)


def where_the_time_goes(rows: dict[str, dict[str, float]]) -> list[str]:
    def d(a: str, b: str) -> str:
        return f"{rows[a]['p50'] - rows[b]['p50']:.3f}"

    text = [
        "Where the time goes (differences of p50s between adjacent layers):",
        "",
        f"- the runtime around the model (decode, tabular, labels, encode): {d('runtime', 'raw')} ms",
        "- the Runtime API round trip + emulator (awslambdaric in its own process): "
        f"{d('emulator', 'runtime')} ms",
        f"- the edge's HTTP hop: {d('edge http', 'emulator')} ms",
        f"- boto3's lambda.invoke over a raw HTTP request (signing, serializing, parsing; client CPU "
        f"{rows['boto3']['cpu']:.3f} ms vs {rows['edge http']['cpu']:.3f} ms): {d('boto3', 'edge http')} ms",
        f"- LambdaInvoker (its own signed request; JSON of the event and the answer) over a raw HTTP "
        f"request: {d('invoker', 'edge http')} ms (client CPU {rows['invoker']['cpu']:.3f} ms); the same "
        f"through boto3 takes {d('invoker via boto3', 'invoker')} ms more "
        f"(client CPU {rows['invoker via boto3']['cpu']:.3f} ms)",
        f"- the Chalice app over the invoker (HTTP, LocalGateway, authorizer and its DynamoDB reads, grant "
        f"check, validation): {d('api', 'invoker')} ms",
    ]
    if "api chained" in rows:
        text.append(
            f"- chained: the state machine through the edge {rows['sfn sync']['p50']:.3f} ms p50 "
            f"(three Lambda invokes in process); the API adds {d('api chained', 'invoker chained')} ms; "
            f"boto3's start_sync_execution would add {d('invoker chained via boto3', 'invoker chained')} ms"
        )
    return [*text, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="calls per layer at concurrency 1")
    parser.add_argument("--moto-requests", type=int, default=30, help="calls of the moto-interpreter path")
    parser.add_argument("--c8-requests", type=int, default=2000, help="requests per concurrency-8 run")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each concurrency-8 configuration")
    parser.add_argument("--seconds", type=float, default=120.0, help="time bound of the concurrency-1 runs")
    parser.add_argument("--label", default="", help="a note in the section (e.g. before/after)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch bench/RESULTS.md")
    parser.add_argument("--load", nargs=2, metavar=("URL", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-api", metavar="EDGE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_api:  # the API process of api_process
        return _serve_api(args.serve_api)
    if args.load:  # the load generator of load_in_child
        return _child(*args.load, args)
    out = run(args)
    text = section(out, args, args.label or "current")
    print(text)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    if not args.no_write:
        write_section(NAME, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
