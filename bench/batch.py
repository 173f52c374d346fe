"""Event-driven batch throughput on the local stack, as a user sees it (issue 13).

The local stack with containers; iris-onnx and digits-onnx deployed. A CSV of N iris rows is put under
``inputs/iris-onnx/`` and timed from the put to its summary; M digit images are put under
``inputs/digits-onnx/`` (one request each) and timed from the first put to the last summary. Rows (or
files) per second, measured from this process through S3.

    python bench/batch.py [--rows 500] [--images 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wait(s3: Any, bucket: str, key: str, timeout_s: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        except s3.exceptions.ClientError:
            time.sleep(0.1)
    raise TimeoutError(key)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--images", type=int, default=30)
    args = parser.parse_args()
    import boto3

    from chalicelib.client import Client, Connection, deploy
    from chalicelib.local.stack import LOCAL_CREDENTIALS, LocalStack

    stack = LocalStack(edge_port=0, api_port=0, launcher="container", registry=False).start()
    try:
        admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
        for name in ("iris-onnx", "digits-onnx"):
            assert deploy(admin, ROOT / "examples" / name).status == "READY"
        s3 = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS).client(
            "s3", endpoint_url=stack.endpoint_url
        )
        bucket = stack.outputs["data_bucket"]
        header = "sepal_length,sepal_width,petal_length,petal_width\n"
        warm = header + "5.1,3.5,1.4,0.2\n"
        s3.put_object(Bucket=bucket, Key="inputs/iris-onnx/warm.csv", Body=warm.encode())
        wait(s3, bucket, "outputs/iris-onnx/warm.summary.json")
        rows = "".join(f"{5 + i % 3},{3.0 + i % 2},{1.4 + i % 4},{0.2 + i % 3}\n" for i in range(args.rows))
        began = time.perf_counter()
        s3.put_object(Bucket=bucket, Key="inputs/iris-onnx/bench.csv", Body=(header + rows).encode())
        iris = wait(s3, bucket, "outputs/iris-onnx/bench.summary.json")
        iris_s = time.perf_counter() - began
        png = (ROOT / "examples" / "digits-onnx" / "samples" / "digit-7.png").read_bytes()
        s3.put_object(Bucket=bucket, Key="inputs/digits-onnx/warm.png", Body=png)
        wait(s3, bucket, "outputs/digits-onnx/warm.summary.json")
        began = time.perf_counter()
        for i in range(args.images):
            s3.put_object(Bucket=bucket, Key=f"inputs/digits-onnx/bench-{i}.png", Body=png)
        for i in range(args.images):
            wait(s3, bucket, f"outputs/digits-onnx/bench-{i}.summary.json")
        digits_s = time.perf_counter() - began
    finally:
        stack.stop()
    print(json.dumps({
        "iris_rows": iris["rows"], "iris_failed": iris["failed"], "iris_seconds": round(iris_s, 2),
        "iris_rows_per_s": round(iris["rows"] / iris_s, 1),
        "digits_images": args.images, "digits_seconds": round(digits_s, 2),
        "digits_images_per_s": round(args.images / digits_s, 2),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
