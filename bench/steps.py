"""Pre/post-processing time against model time, per example, in process through the real runtime.

Each example is laid out as in its image and loaded with ``chalicelib.runtime.handler.load`` (warmed as in
Lambda's init), then answers the same request ``--calls`` times through ``Runtime.handle``. The table
gives median and p99 of every timing the runtime reports (the stages and each step), and of the whole
``handle`` call. Writes its section into bench/RESULTS.md between its markers, keeping the others.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import markers, write_section  # noqa: E402 - bench/results.py, beside this script

from chalicelib.core.wire import JSON, InvocationEvent, invocation_event  # noqa: E402
from chalicelib.runtime.handler import load  # noqa: E402
from chalicelib.runtime.layout import prepare_model_dir  # noqa: E402
from chalicelib.services.intake import config_file_for_dir  # noqa: E402

MARK_BEGIN, MARK_END = markers("steps")
EXAMPLES = ROOT / "examples"
IRIS_RECORD = {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5}


def events() -> dict[str, tuple[str, InvocationEvent]]:
    """Per example: what the request is, and its invocation event."""
    digit = (EXAMPLES / "digits-onnx" / "samples" / "digit-3.png").read_bytes()
    patients = (EXAMPLES / "diabetes-lightgbm" / "samples" / "patients.csv").read_text()
    return {
        "iris-onnx": (
            "1 record (JSON) -> labels + bar chart",
            invocation_event(json.dumps({"records": [IRIS_RECORD]}), JSON),
        ),
        "digits-onnx": ("64x64 PNG -> top 3 + bar chart", invocation_event(digit, "image/png")),
        "diabetes-lightgbm": (
            "40 rows (CSV) -> regression + scatter plot",
            invocation_event(patients, "text/csv"),
        ),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(name: str, event: InvocationEvent, calls: int, accept: str) -> dict[str, list[float]]:
    src = EXAMPLES / name
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        runtime = load(prepare_model_dir(src, config_file_for_dir(src), Path(tmp) / name))
        runtime.handle({**event, "accept": accept})  # the first answer reports init_ms: not a sample
        samples: dict[str, list[float]] = {}
        for _ in range(calls):
            t0 = time.perf_counter()
            response = runtime.handle({**event, "accept": accept})
            wall = (time.perf_counter() - t0) * 1000
            assert response["status"] == 200, response["body"][:300]
            for key, ms in response["timings"].items():
                samples.setdefault(key.removesuffix("_ms"), []).append(ms)
            samples.setdefault("handle (wall)", []).append(wall)
    return samples


def table(name: str, what: str, samples: dict[str, list[float]]) -> list[str]:
    model = statistics.median(samples["model"])
    lines = [
        f"**{name}**: {what}",
        "",
        "| timing | median ms | p99 ms | median / model |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, values in samples.items():
        med = statistics.median(values)
        label = f"&nbsp;&nbsp;{key}" if "." in key else key
        lines.append(f"| {label} | {med:.3f} | {percentile(values, 0.99):.3f} | {med / model:.1f} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--accept", default="application/json", help="the response form (JSON + figure)")
    parser.add_argument("--only", nargs="*", help="examples to measure (default: all)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    lines = [
        MARK_BEGIN,
        "## Processing steps against the model, in process (`Runtime.handle`)",
        "",
        f"`python bench/steps.py --calls {args.calls}` on {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        f"Each example loaded as in its image, then the same request {args.calls} times, "
        f"`Accept: {args.accept}`. Stage timings are what the runtime reports (and the invoke API turns "
        "into `Server-Timing`); indented rows are single steps inside `pre`/`post`; `handle (wall)` is "
        "the whole call.",
        "",
    ]
    for name, (what, event) in events().items():
        if args.only and name not in args.only:
            continue
        samples = measure(name, event, args.calls, args.accept)
        lines += table(name, what, samples)
        print(f"{name}: done", file=sys.stderr)
    lines.append(MARK_END)
    section = "\n".join(lines)
    print(section)
    if args.no_write:
        return
    write_section("steps", section)


if __name__ == "__main__":
    main()
