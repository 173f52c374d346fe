"""Modelport beside the established model servers, in one run, driven from outside by one load generator.

The same iris ONNX model (``examples/iris-onnx/model.onnx``, one row of four floats) is served by:

- a **stdlib floor**: ``http.server`` answering a fixed JSON document (what HTTP alone costs here);
- **MLServer** (pinned below) in its own virtualenv, one process, a custom runtime on onnxruntime;
- **BentoML** (pinned below) in its own virtualenv, one worker, an async API on onnxruntime;
- **Modelport**'s local stack as ``modelport up`` runs it (container environments, the API in its own
  process), iris deployed fused with its labels step only, called as a user calls it (API key header).

``wrk`` (C, not Python, not in any measured process) drives each server alone: one connection for
``--c1-s`` seconds, then eight for ``--c8-s``, keep-alive, after a warm-up; the order of the servers
alternates over ``--rounds``. Recorded: p50/p99/p99.9 at c1, req/s and p99 at c8, cold start (process
start to the first answer) and RSS, and ratios to BentoML, in ``bench/RESULTS.md`` (``peers`` section).

Needs ``wrk`` (Debian: ``apt-get install wrk``) and a docker engine for Modelport's container
environments. The virtualenvs are made under ``~/.cache/modelport/peers`` on the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import markers, write_section  # noqa: E402 - bench/results.py, beside this script

MLSERVER = "mlserver==1.7.1"
BENTOML = "bentoml==1.4.40"
ONNXRUNTIME = "onnxruntime==1.32.0"
MODEL = ROOT / "examples" / "iris-onnx" / "model.onnx"
ROW = [5.1, 3.5, 1.4, 0.2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelport" / "peers"
MARK_BEGIN, MARK_END = markers("peers")
WARM = 4
"""Modelport's iris function keeps this many environments initialized (``provisioned_concurrency``), as a
service expecting bursts of 8 callers would: scale-out then never lands on a request."""

MLSERVER_RUNTIME = """
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class IrisOnnx(MLModel):
    async def load(self) -> bool:
        self.session = ort.InferenceSession(self.settings.parameters.uri, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        label, probabilities = self.session.run(None, {"input": x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("label", label),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )
"""

BENTO_SERVICE = """
import numpy as np
import onnxruntime as ort
import bentoml

LABELS = ["setosa", "versicolor", "virginica"]


@bentoml.service(workers=1)
class Iris:
    def __init__(self) -> None:
        self.session = ort.InferenceSession(MODEL_PATH, providers=["CPUExecutionProvider"])

    @bentoml.api
    async def predict(self, rows: list[list[float]]) -> dict:
        label, probabilities = self.session.run(None, {"input": np.asarray(rows, dtype=np.float32)})
        return {
            "predictions": [
                [{"label": LABELS[j], "score": float(p[j])} for j in np.argsort(-p)] for p in probabilities
            ]
        }
"""

FLOOR_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = json.dumps({"predictions": [[{"label": "setosa", "score": 0.97}]]}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    RESPONSE = (
        b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
        + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY
    )

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.wfile.write(self.RESPONSE)  # one write: one segment

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("PEER_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("PEER_KEY")
if key ~= nil and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    "PEER {\\"requests\\": %d, \\"seconds\\": %f, \\"errors\\": %d, "
    .. "\\"p50\\": %f, \\"p99\\": %f, \\"p999\\": %f}\\n",
    summary.requests, summary.duration / 1e6, errors,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
"""


@dataclass
class Server:
    """One server under test: how to start it, where to send, what to send."""

    name: str
    url: str
    body: dict[str, Any]
    key: str = ""
    cold_s: float = 0.0
    pids: list[int] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv(name: str, packages: list[str]) -> Path:
    """A virtualenv under the cache with ``packages`` (made once; kept for the next run)."""
    where = CACHE / name
    python = where / "bin" / "python"
    marker = where / ".packages"
    if not (python.exists() and marker.exists() and marker.read_text() == " ".join(packages)):
        shutil.rmtree(where, ignore_errors=True)
        print(f"making the {name} virtualenv ({', '.join(packages)}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
        marker.write_text(" ".join(packages))
    return python


def post(url: str, body: dict[str, Any], key: str = "", timeout: float = 5.0) -> int:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()
        return int(answer.status)


def wait_answering(server: Server, began: float, timeout_s: float = 180.0) -> None:
    while time.monotonic() - began < timeout_s:
        try:
            if post(server.url, server.body, server.key) == 200:
                server.cold_s = time.monotonic() - began
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{server.name} did not answer at {server.url} within {timeout_s:.0f} s")


@contextmanager
def process(
    name: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = open(cwd / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextmanager
def serving(
    server: Server, name: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``server`` started as ``argv``, once it answers (its cold start: process start to first answer)."""
    began = time.monotonic()
    with process(name, argv, cwd, env) as proc:
        wait_answering(server, began)
        server.pids = [proc.pid]
        yield server


def rss_mb(pids: list[int]) -> float:
    """Resident memory of ``pids`` and all their descendants, MB (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    seen, todo, total = set(), list(pids), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def wrk(server: Server, connections: int, seconds: float, script: Path) -> dict[str, float]:
    env = {**os.environ, "PEER_BODY": json.dumps(server.body), "PEER_KEY": server.key}
    run = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency",
         "-s", str(script), server.url],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"^PEER (\{.*\})$", run.stdout, re.MULTILINE)
    if found is None:
        raise SystemExit(f"wrk printed no summary for {server.name}:\n{run.stdout}\n{run.stderr}")
    doc: dict[str, float] = json.loads(found.group(1))
    doc["rps"] = doc["requests"] / doc["seconds"]
    return doc


# --------------------------------------------------------------------------- the servers


@contextmanager
def floor(work: Path) -> Iterator[Server]:
    port = free_port()
    (work / "floor.py").write_text(FLOOR_SERVER)
    server = Server("stdlib HTTP floor", f"http://127.0.0.1:{port}/", {"rows": [ROW]})
    with serving(server, "floor", [sys.executable, "floor.py", str(port)], work):
        yield server


@contextmanager
def mlserver(work: Path) -> Iterator[Server]:
    python = venv("mlserver", [MLSERVER, ONNXRUNTIME])
    home = work / "mlserver"
    (home / "iris").mkdir(parents=True, exist_ok=True)
    shutil.copy(MODEL, home / "iris" / "model.onnx")
    (home / "iris" / "runtime.py").write_text(MLSERVER_RUNTIME)
    uri = str(home / "iris" / "model.onnx")
    settings = {"name": "iris", "implementation": "runtime.IrisOnnx", "parameters": {"uri": uri}}
    (home / "iris" / "model-settings.json").write_text(json.dumps(settings))
    port = free_port()
    server_settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
    }
    (home / "settings.json").write_text(json.dumps(server_settings))
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    server = Server("MLServer 1.7.1 (one process)", f"http://127.0.0.1:{port}/v2/models/iris/infer", body)
    with serving(server, "mlserver", [str(python.parent / "mlserver"), "start", "."], home):
        yield server


@contextmanager
def bentoml(work: Path) -> Iterator[Server]:
    python = venv("bentoml", [BENTOML, ONNXRUNTIME])
    home = work / "bentoml"
    home.mkdir(parents=True, exist_ok=True)
    (home / "service.py").write_text(f"MODEL_PATH = {str(MODEL)!r}\n" + BENTO_SERVICE)
    port = free_port()
    server = Server("BentoML 1.4.40 (one worker)", f"http://127.0.0.1:{port}/predict", {"rows": [ROW]})
    env = {**os.environ, "BENTOML_HOME": str(home / "home"), "BENTOML_DO_NOT_TRACK": "true"}
    argv = [
        str(python.parent / "bentoml"),
        "serve",
        "service:Iris",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    with serving(server, "bentoml", argv, home, env):
        yield server


@contextmanager
def modelport(work: Path) -> Iterator[Server]:
    """The local stack as ``modelport up`` starts it, iris deployed fused with its labels step only."""
    from chalicelib.client import Client, Connection, deploy
    from chalicelib.local.stack import LocalStack

    def write(name: str, warm: int) -> Path:
        model = work / name
        model.mkdir(parents=True, exist_ok=True)
        shutil.copy(MODEL, model / "model.onnx")
        (model / "modelport.yaml").write_text(
            f"name: {name}\nframework: onnx\nartifacts: [model.onnx]\n"
            "labels: [setosa, versicolor, virginica]\nprocessing:\n  pre:\n"
            "    - tabular: {features: [sepal_length, sepal_width, petal_length, petal_width]}\n"
            "  post: [labels]\npipeline: fused\n"
            f"environment:\n  provisioned_concurrency: {warm}\n"
        )
        return model

    stack = LocalStack(edge_port=0, api_port=0, launcher="container", registry=False).start()
    try:
        admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
        for name, warm in (("iris-cold", 0), ("iris-labels", WARM)):
            outcome = deploy(admin, write(name, warm))
            if outcome.status != "READY":
                raise SystemExit(f"{name} did not deploy: {outcome.reason}")
        # The cold start: the first call of a model deployed without provisioned concurrency (a
        # container starts on the request); the measured model's environments were initialized at deploy.
        cold = Server("cold", stack.api_url.rstrip("/") + "/v1/models/iris-cold/invoke", {"rows": [ROW]},
                      key=stack.admin_key)  # fmt: skip
        wait_answering(cold, time.monotonic())
        url = stack.api_url.rstrip("/") + "/v1/models/iris-labels/invoke"
        server = Server(
            f"Modelport (container environments, {WARM} provisioned)", url, {"rows": [ROW]},
            key=stack.admin_key,
        )  # fmt: skip
        wait_answering(server, time.monotonic())
        server.cold_s = cold.cold_s
        server.pids = [os.getpid()]
        yield server
    finally:
        stack.stop()


SERVERS: dict[str, Callable[[Path], Any]] = {
    "floor": floor,
    "mlserver": mlserver,
    "bentoml": bentoml,
    "modelport": modelport,
}


# --------------------------------------------------------------------------- the run


def measure(name: str, work: Path, script: Path, args: argparse.Namespace) -> dict[str, Any]:
    with SERVERS[name](work) as server:
        wrk(server, 1, args.warm_s, script)  # warm-up: not recorded
        c1 = wrk(server, 1, args.c1_s, script)
        c8 = wrk(server, 8, args.c8_s, script)
        return {
            "server": server.name, "cold_s": server.cold_s, "rss_mb": rss_mb(server.pids),
            "c1": c1, "c8": c8,
        }  # fmt: skip


def table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    def median(name: str, pick: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(pick(r) for r in rows[name])

    base = "bentoml" if "bentoml" in rows else next(iter(rows))
    lines = [
        "| server | p50 ms @c1 | p99 ms @c1 | p99.9 ms @c1 | req/s @c8 | p99 ms @c8 | cold start s | RSS MB "
        "| p50 @c1 vs BentoML | req/s @c8 vs BentoML |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in rows.items():
        p50 = median(name, lambda r: r["c1"]["p50"])
        rps = median(name, lambda r: r["c8"]["rps"])
        errors = sum(int(r["c1"]["errors"] + r["c8"]["errors"]) for r in runs)
        label = runs[0]["server"] + (f" ({errors} errors)" if errors else "")
        lines.append(
            f"| {label} | {p50:.2f} | {median(name, lambda r: r['c1']['p99']):.2f} | "
            f"{median(name, lambda r: r['c1']['p999']):.2f} | {rps:,.0f} | "
            f"{median(name, lambda r: r['c8']['p99']):.1f} | {median(name, lambda r: r['cold_s']):.2f} | "
            f"{median(name, lambda r: r['rss_mb']):.0f} | "
            f"{p50 / median(base, lambda r: r['c1']['p50']):.2f}x | "
            f"{rps / median(base, lambda r: r['c8']['rps']):.2f}x |"
        )
    return lines


def render(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    """The RESULTS.md section: the medians table, then each round's headline figures."""
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1]
    lines = [
        MARK_BEGIN,
        "## Beside BentoML and MLServer, measured from outside (issue 15)",
        "",
        f"`python bench/peers.py --rounds {args.rounds}` on {platform.machine()} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d')}: {' '.join(wrk_version) or 'wrk'}, one thread; after "
        f"{args.warm_s:.0f} s of warm-up, one connection for {args.c1_s:.0f} s, then 8 connections for "
        f"{args.c8_s:.0f} s, "
        f"keep-alive; each server alone, the order alternating over rounds; medians over rounds. The iris "
        "ONNX model, one row a request. Modelport: the local stack with container environments, iris with "
        f"`tabular` + `labels`, fused, `provisioned_concurrency: {WARM}`, the API key in the header. Cold "
        "start: process start (for Modelport, the first call of the same model deployed without "
        "provisioned concurrency: a container starts on the request) to the first answer. RSS: the "
        "server's processes and their children (Modelport's: the stack's process and its API process; "
        "the model's container is not counted). Errors: wrk's connect, read, write, timeout and non-2xx "
        "counts.",
        "",
        *table(rows),
        "",
        "Each round (the order alternates):",
        "",
        "| server | round | p50 ms @c1 | req/s @c8 | p99 ms @c8 | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['server']} | {i + 1} | {r['c1']['p50']:.2f} | {r['c8']['rps']:,.0f} | "
            f"{r['c8']['p99']:.1f} | {int(r['c1']['errors'] + r['c8']['errors'])} |"
            for runs in rows.values()
            for i, r in enumerate(runs)
        ),
        MARK_END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", nargs="*", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--warm-s", type=float, default=3.0)
    parser.add_argument("--c1-s", type=float, default=10.0)
    parser.add_argument("--c8-s", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/peers.py needs wrk (Debian: apt-get install wrk)")

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in args.servers}
    with tempfile.TemporaryDirectory(prefix="modelport-peers-") as tmp:
        script = Path(tmp) / "peer.lua"
        script.write_text(WRK_SCRIPT)
        for round_ in range(args.rounds):
            order = args.servers if round_ % 2 == 0 else list(reversed(args.servers))
            for name in order:
                print(f"round {round_ + 1}: {name} ...", file=sys.stderr)
                work = Path(tmp) / f"{name}-{round_}"
                work.mkdir()
                rows[name].append(measure(name, work, script, args))
                print(json.dumps(rows[name][-1]), file=sys.stderr)

    section = render(rows, args)
    print(section)
    if not args.no_write:
        write_section("peers", section)


if __name__ == "__main__":
    main()
