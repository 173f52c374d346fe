"""Fused against chained, per example, through the local stack in process mode.

Each example is deployed with the real function manager against the edge (Lambda emulator running the
runtime as processes; moto keeps the state machines, the edge runs ``StartSyncExecution``): ``pipeline:
fused`` (one function, ``Invoke``), ``pipeline: chained`` (a function per stage behind an EXPRESS
machine), and *shared*: chained on one pre/post pair shared by every model, which stays warm while each
model's own function starts cold. Cold = the first call of a newly deployed version; warm = the same
request ``--calls`` times afterwards. Wall times are the client's. Also each role's init in a fresh
interpreter and the size of the intermediate documents between stages (what Step Functions carries,
limit 256 KiB). Writes its section into bench/RESULTS.md between its markers, keeping the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import RESULTS, markers, write_section  # noqa: E402 - bench/results.py, beside this script

from chalicelib.core.config_file import ContainerAssociation, ModelConfigFile  # noqa: E402
from chalicelib.core.pipeline import stages_of, with_plan  # noqa: E402
from chalicelib.core.wire import JSON, InvocationEvent, invocation_event  # noqa: E402
from chalicelib.runtime.handler import load  # noqa: E402
from chalicelib.services.intake import config_file_for_dir  # noqa: E402

MARK_BEGIN, MARK_END = markers("pipelines")
EXAMPLES = ROOT / "examples"
ROLE = "arn:aws:iam::123456789012:role/modelport-functions"
SFN_LIMIT = 256 * 1024


def events() -> dict[str, tuple[str, InvocationEvent]]:
    digit = (EXAMPLES / "digits-onnx" / "samples" / "digit-3.png").read_bytes()
    patients = (EXAMPLES / "diabetes-lightgbm" / "samples" / "patients.csv").read_text()
    record = {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5}
    iris = invocation_event(json.dumps({"records": [record]}), JSON)
    return {
        "iris-onnx": ("1 record -> labels + bar chart", iris),
        "iris-skops": ("1 record -> labels + bar chart", iris),
        "digits-onnx": ("PNG -> top 3 + bar chart", invocation_event(digit, "image/png")),
        "diabetes-lightgbm": ("40 rows CSV -> regression + scatter", invocation_event(patients, "text/csv")),
        "sentiment-predictor": (
            "JSON -> predictor (no steps: a chain of one)",
            invocation_event(json.dumps({"text": "not bad at all, quite good"}), JSON),
        ),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def with_image(manifest: ModelConfigFile, image: str, version: int, pipeline: str) -> ModelConfigFile:
    container = ContainerAssociation(
        environment_image="env", image_uri=image, image_digest="sha256:" + "0" * 64, size_bytes=1
    )
    update = {"container": container, "version": version, "pipeline": pipeline}
    return with_plan(manifest.model_copy(update=update), shared_stages=False)


def intermediate_sizes(model_dir: Path, event: dict[str, Any]) -> list[int]:
    """Bytes of each document a stage hands the next, for ``event``."""
    manifest = ModelConfigFile.model_validate_json((model_dir / "model-config.json").read_bytes())
    sizes = []
    doc: Any = event
    for role in stages_of(manifest)[:-1]:
        doc = load(model_dir, role=role).handle(doc)
        sizes.append(len(json.dumps(doc, separators=(",", ":"))))
    return sizes


INIT_PROBE = """
import sys, time
t0 = time.perf_counter()
from chalicelib.runtime.handler import load
load(sys.argv[1], role=sys.argv[2])
print((time.perf_counter() - t0) * 1000)
"""


def init_ms(model_dir: Path, role: str, runs: int) -> float:
    """Import + load + warm-up of one role in a fresh interpreter (what its cold start costs beyond the
    interpreter itself), median of ``runs``."""
    import subprocess

    times = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": tempfile.mkdtemp(prefix="mpl-")}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", INIT_PROBE, str(model_dir), role],
            capture_output=True, text=True, check=True, env=env, cwd=ROOT,
        )  # fmt: skip
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def shared_stage_functions(images: Any, lam: Any, root: Path) -> dict[str, str]:
    """A pre and a post function shared by every model (an image without any model), started now so
    that they are warm when a model's function is cold, as shared functions mostly are."""
    from chalicelib.local.launchers import ProcessImage

    empty = root / "steps-image"
    empty.mkdir()
    images.register(
        "modelport/steps:bench", ProcessImage(Path(sys.executable), empty, ROOT, "sha256:" + "1" * 64)
    )
    arns = {}
    for role in ("pre", "post"):
        arns[role] = lam.create_function(
            FunctionName=f"modelport-steps-{role}", Role=ROLE, PackageType="Image",
            Code={"ImageUri": "modelport/steps:bench"}, MemorySize=512, Timeout=30,
            Environment={"Variables": {"MODELPORT_ROLE": role, "MODELPORT_SHARED_STAGE": "1"}},
        )["FunctionArn"]  # fmt: skip
        lam.invoke(FunctionName=arns[role], Payload=b"{}")  # starts it (answers 500: no model config)
    return arns


def shared_deployment(manifest: ModelConfigFile, shared: dict[str, str], lam: Any, sfn: Any) -> Any:
    """The model's own function (the model stage only) behind a machine whose pre/post are shared."""
    from chalicelib.core.config_file import DeployedFunctions
    from chalicelib.core.pipeline import state_machine_definition

    assert manifest.container is not None
    name = f"modelport-{manifest.name}-shared-v{manifest.version}"
    arn = lam.create_function(
        FunctionName=name, Role=ROLE, PackageType="Image", Code={"ImageUri": manifest.container.image_uri},
        MemorySize=manifest.environment.memory_mb, Timeout=manifest.environment.timeout_s,
        Environment={"Variables": {"MODELPORT_ROLE": "model"}},
    )["FunctionArn"]  # fmt: skip
    arns = {role: shared[role] for role in stages_of(manifest) if role != "model"}
    definition = state_machine_definition(manifest, {**arns, "model": arn}, shared=tuple(arns))  # type: ignore[dict-item]
    machine = sfn.create_state_machine(
        name=name, definition=json.dumps(definition), roleArn=ROLE, type="EXPRESS"
    )["stateMachineArn"]
    return DeployedFunctions(mode="chained", functions=(), state_machine_arn=machine)


def env_sizes() -> tuple[float, float] | None:
    """iris-onnx's venv MB with and without its chart (matplotlib + Pillow), from the images section."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    found = {}
    for name in ("iris-onnx", "iris-onnx-labels"):
        m = re.search(rf"^\| {re.escape(name)} \| [\d.]+ \| [\d.]+ / ([\d.]+) /", text, re.M)
        if m:
            found[name] = float(m.group(1))
    return (found["iris-onnx"], found["iris-onnx-labels"]) if len(found) == 2 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50, help="warm calls per mode and example")
    parser.add_argument("--cold", type=int, default=2, help="cold starts (new versions) per mode and example")
    parser.add_argument("--only", nargs="*", help="examples to run (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        os.environ.setdefault(key, value)
    import boto3
    from botocore.config import Config

    from chalicelib.aws.functions import LambdaFunctionManager
    from chalicelib.aws.invoke import LambdaInvoker
    from chalicelib.local.launchers import ProcessImages
    from chalicelib.local.stack import LocalStack

    root = Path(tempfile.mkdtemp(prefix="bench-pipelines-"))
    images = ProcessImages(root / "images")
    stack = LocalStack(
        edge_port=0, api_port=0, launcher="process", registry=False, api_process=False,
        image_builder="memory", process_images=images, ship_logs=False,
    ).start()  # fmt: skip
    config = Config(retries={"max_attempts": 0}, read_timeout=120)
    lam = boto3.client("lambda", endpoint_url=stack.endpoint_url, config=config)
    sfn = boto3.client(
        "stepfunctions",
        endpoint_url=stack.endpoint_url,
        config=Config(inject_host_prefix=False, read_timeout=120),
    )
    manager = LambdaFunctionManager(lam, ROLE, sfn_client=sfn, wait_s=60)
    invoker = LambdaInvoker(lam, sfn)
    shared = shared_stage_functions(images, lam, root)
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    try:
        for name, (what, event) in events().items():
            if args.only and name not in args.only:
                continue
            src = EXAMPLES / name
            manifest = config_file_for_dir(src)
            image = f"modelport/{name}:bench"
            written = images.write(image, src, manifest)
            row: dict[str, Any] = {"name": name, "what": what, "stages": "/".join(stages_of(manifest))}
            row["docs"] = intermediate_sizes(written.model_dir, event)
            row["init"] = {
                role: init_ms(written.model_dir, role, max(args.cold, 1))
                for role in ("fused", *stages_of(manifest))
            }
            row["request"] = len(json.dumps(event))
            # The modes alternate call by call, so load from elsewhere on the machine hits both alike.
            modes = ("fused", "chained", "shared") if "/" in row["stages"] else ("fused", "chained")
            cold: dict[str, list[float]] = {m: [] for m in modes}
            warm: dict[str, list[float]] = {m: [] for m in modes}
            answers: dict[str, dict[str, object]] = {}
            deployments = {}
            for version in range(1, args.cold + 1):
                for mode in modes:
                    versioned = with_image(
                        manifest, image, version, "fused" if mode == "fused" else "chained"
                    )
                    deployments[mode] = (
                        shared_deployment(versioned, shared, lam, sfn)
                        if mode == "shared"
                        else manager.deploy(versioned, lambda line: None)
                    )
                for mode in modes:
                    t0 = time.perf_counter()
                    answers[mode] = invoker.invoke(deployments[mode], event)
                    cold[mode].append((time.perf_counter() - t0) * 1000)
                    assert answers[mode]["status"] == 200, answers[mode]
            for _ in range(args.calls):
                for mode in modes:
                    t0 = time.perf_counter()
                    answers[mode] = invoker.invoke(deployments[mode], event)
                    warm[mode].append((time.perf_counter() - t0) * 1000)
            for mode in modes:
                row[mode] = {
                    "cold": statistics.median(cold[mode]),
                    "warm": statistics.median(warm[mode]),
                    "p99": percentile(warm[mode], 99),
                    "body": answers[mode]["body"],
                    "response": len(json.dumps(answers[mode])),
                }
            row["same"] = all(row[m]["body"] == row["fused"]["body"] for m in modes)
            rows.append(row)
            f, c = row["fused"], row["chained"]
            print(
                f"{name}: fused cold {f['cold']:.0f} warm {f['warm']:.2f} p99 {f['p99']:.2f} | chained cold "
                f"{c['cold']:.0f} warm {c['warm']:.2f} p99 {c['p99']:.2f} | same {row['same']}",
                flush=True,
            )
    finally:
        stack.stop()
    load_after = os.getloadavg()[0]

    lines = [
        MARK_BEGIN,
        "## Fused against chained pipelines, through the local stack (process mode)",
        "",
        f"`python bench/pipelines.py --calls {args.calls} --cold {args.cold}` on {platform.machine()}, "
        f"CPython {platform.python_version()}, {time.strftime('%Y-%m-%d')}. Each example deployed by "
        "`LambdaFunctionManager` against the edge: fused = one function, `Invoke`; chained = one function "
        "per stage behind an EXPRESS state machine, `StartSyncExecution` (the edge's in-process ASL "
        "interpreter, `chalicelib/local/asl.py`, calling the emulator). Cold = first call of a new "
        "version (every environment starts, median of "
        f"{args.cold}); warm = median and p99 of {args.calls} calls after it. Client wall time, ms. "
        f"Load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} cores.",
        "",
        "**shared** = chained, but pre and post run on one pre and one post function shared by every model "
        "(an image without a model; the model's config in each Task's `Parameters`), warm as shared "
        "functions mostly are: only the model's own function starts cold.",
        "",
        "| example | request | stages | fused cold | chained cold | shared cold | fused warm | chained warm "
        "| shared warm | fused p99 | chained p99 | shared p99 | documents between stages, B | same body |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        f, c, sh = r["fused"], r["chained"], r.get("shared")

        def cell(mode: dict[str, Any] | None, key: str, digits: int) -> str:
            return "-" if mode is None else f"{mode[key]:.{digits}f}"

        lines.append(
            f"| {r['name']} | {r['what']} | {r['stages']} | {cell(f, 'cold', 0)} | {cell(c, 'cold', 0)} | "
            f"{cell(sh, 'cold', 0)} | {cell(f, 'warm', 2)} | {cell(c, 'warm', 2)} | {cell(sh, 'warm', 2)} | "
            f"{cell(f, 'p99', 2)} | {cell(c, 'p99', 2)} | {cell(sh, 'p99', 2)} | "
            f"{', '.join(map(str, r['docs'])) or '-'} | {'yes' if r['same'] else 'NO'} |"
        )
    lines += [
        "",
        "Init of each role in a fresh interpreter (imports, load, warm-up; median of "
        f"{max(args.cold, 1)}, ms): what one function's cold start costs beyond starting Python.",
        "",
        "| example | fused | pre | model | post | pre + model + post |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        init = r["init"]
        cells = [f"{init[k]:.0f}" if k in init else "-" for k in ("fused", "pre", "model", "post")]
        chained_sum = sum(v for k, v in init.items() if k != "fused")
        lines.append(f"| {r['name']} | {' | '.join(cells)} | {chained_sum:.0f} |")
    sizes = env_sizes()
    if rows:
        hops = [
            (r["chained"]["warm"] - r["fused"]["warm"]) / max(1, len(r["stages"].split("/")) - 1)
            for r in rows
            if "/" in r["stages"]
        ]
        lines += [
            "",
            f"Per hop (a Task state more, warm): {statistics.median(hops):.1f} ms median over the examples "
            "with steps. Requests and responses here are far below Step Functions' 256 KiB state limit "
            f"(largest response {max(max(r['fused']['response'], r['chained']['response']) for r in rows):,}"
            " bytes, a base64 chart).",
        ]
    if sizes:
        with_chart, without = sizes
        lines.append(
            f"From the images section: iris-onnx's environment is {with_chart:g} MB with its bar chart and "
            f"{without:g} MB without (matplotlib + Pillow are "
            f"{100 * (with_chart - without) / with_chart:.0f}% "
            "of it); a chained model's image leaves them out and its pre/post run on one steps image "
            "shared by every model with those steps (docs/pipelines.md)."
        )
    lines.append(MARK_END)
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section("pipelines", section)


if __name__ == "__main__":
    main()
