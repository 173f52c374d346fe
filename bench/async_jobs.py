"""What an asynchronous job costs beside a synchronous call, as a user measures it (issue 13).

The local stack as ``modelport up`` runs it (containers, the API in its own process, the event pump),
iris-onnx deployed; from this process over HTTP: N synchronous invokes, then N jobs, each submitted
(``Prefer: respond-async``) and polled every 20 ms until SUCCEEDED. Reported: p50/p90 of each and the
difference: the queue (the pump polls SQS), the job record's writes, the request and answer in S3.

    python bench/async_jobs.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = {"records": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    from chalicelib.client import Client, Connection, deploy
    from chalicelib.local.stack import LocalStack

    stack = LocalStack(edge_port=0, api_port=0, launcher="container", registry=False).start()
    try:
        admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
        assert deploy(admin, ROOT / "examples" / "iris-onnx").status == "READY"
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {stack.admin_key}"
        url = stack.api_url.rstrip("/") + "/v1/models/iris-onnx/invoke"
        for _ in range(3):  # warm: the chain's functions started
            http.post(url, json=BODY, timeout=60).raise_for_status()
        sync = []
        for _ in range(args.runs):
            began = time.perf_counter()
            http.post(url, json=BODY, timeout=60).raise_for_status()
            sync.append((time.perf_counter() - began) * 1000)
        jobs = []
        for _ in range(args.runs):
            began = time.perf_counter()
            answer = http.post(url, json=BODY, headers={"Prefer": "respond-async"}, timeout=60)
            location = stack.api_url.rstrip("/") + answer.headers["Location"]
            while True:
                doc = http.get(location, timeout=60).json()
                if doc["status"] in ("SUCCEEDED", "FAILED"):
                    break
                time.sleep(0.02)
            assert doc["status"] == "SUCCEEDED", doc
            jobs.append((time.perf_counter() - began) * 1000)
    finally:
        stack.stop()

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[int(p) - 1]

    result = {
        "runs": args.runs,
        "sync_p50_ms": round(statistics.median(sync), 1),
        "sync_p90_ms": round(q(sync, 90), 1),
        "job_p50_ms": round(statistics.median(jobs), 1),
        "job_p90_ms": round(q(jobs, 90), 1),
        "job_overhead_p50_ms": round(statistics.median(jobs) - statistics.median(sync), 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
