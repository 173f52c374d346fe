"""Cost per million predictions, per example, fused and chained, from measured billed durations.

Each example is deployed through the local stack in process mode, as bench/pipelines.py does it (the real
function manager against the edge: the Lambda emulator running the runtime as processes, the edge running
``StartSyncExecution``), once ``pipeline: fused`` and once ``pipeline: chained``. The first call of each
new version is its cold start; then ``--calls`` warm calls. Every reply's ``runs`` (and a chain's
``billingDetails``) is priced by ``chalicelib.core.cost.bill_for``, exactly as the control plane prices
a real invocation, at the example's memory and architecture. A prediction here is one invocation (one
request, whatever number of rows it holds).

The durations are this machine's, through the emulator: Lambda's CPUs (a fraction of a core below 1,769
MB) make real durations longer for CPU-bound models, so treat the figures as the shape of the cost
(requests vs GB-s, fused vs chained), and the tables as reproducible from ``python bench/cost.py``.
Writes its section into bench/RESULTS.md between its markers, keeping the others.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from results import markers, write_section  # noqa: E402 - bench/results.py, beside this script

from chalicelib.core.config_file import ModelConfigFile  # noqa: E402
from chalicelib.core.cost import Bill, bill_for, usd  # noqa: E402

MARK_BEGIN, MARK_END = markers("cost")
MILLION = 1_000_000
MODES = ("fused", "chained")


@dataclass
class Measured:
    """One example in one mode: the bill of its cold call and of each warm call."""

    cold: Bill
    warm: list[Bill] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)


def per_million_pp(bills: Sequence[Bill]) -> int:
    """What a million calls cost at the mean of ``bills``, in pico-dollars (rounded half up)."""
    if not bills:
        raise ValueError("no calls to price")
    total = sum(b.cost_pp for b in bills) * MILLION
    return (2 * total + len(bills)) // (2 * len(bills))


def blended_pp(warm: Sequence[Bill], cold: Bill, cold_share: float) -> int:
    """A million calls of which ``cold_share`` start an environment (each as ``cold`` cost), the rest warm."""
    warm_pp = per_million_pp(warm)
    return round(warm_pp * (1 - cold_share) + cold.cost_pp * MILLION * cold_share)


def median_billed_ms(bills: Sequence[Bill]) -> float:
    return statistics.median(b.billed_ms for b in bills)


def dollars(pico: int, digits: int = 4) -> str:
    """A per-million figure as ``$1.8667`` (rounded for the table; ``usd`` is exact)."""
    return f"${pico / 10**12:.{digits}f}"


def table(rows: dict[str, dict[str, Measured]], memory: dict[str, str], cold_share: float) -> list[str]:
    """The section's table: per example and mode, billed ms and the cost of a million calls."""
    lines = [
        "| example | memory, arch | mode | warm billed ms (median) | cold billed ms | $ / 1M warm "
        f"| $ / 1M at {cold_share:.0%} cold | one cold call |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, modes in rows.items():
        for mode, m in modes.items():
            lines.append(
                f"| {name} | {memory[name]} | {mode} | {median_billed_ms(m.warm):g} | {m.cold.billed_ms} "
                f"| {dollars(per_million_pp(m.warm))} | {dollars(blended_pp(m.warm, m.cold, cold_share))} "
                f"| ${usd(m.cold.cost_pp)} |"
            )
    return lines


def section(
    rows: dict[str, dict[str, Measured]], memory: dict[str, str], *, calls: int, cold_share: float
) -> str:
    lines = [
        MARK_BEGIN,
        "## Cost per million predictions, fused and chained",
        "",
        f"`python bench/cost.py --calls {calls}` on {platform.machine()}, CPython "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}, through the local stack (process "
        "mode). Each reply's reported runs priced by `chalicelib/core/cost.py` (us-east-1 on-demand: "
        "Lambda $0.20 per 1M requests + GB-s at the architecture's rate, billed per 1 ms; a chain adds "
        "Step Functions Express, $1.00 per 1M + 64 MB chunks in 100 ms steps) at the example's memory; "
        "a shared pre/post stage at its 1 GB. Warm = mean of "
        f"{calls} calls after the first; cold = the first call of a new version (its init billed). "
        "Durations are this machine's, not Lambda's (docs/usage.md).",
        "",
        *table(rows, memory, cold_share),
        "",
        "By the prices alone: a warm fused call of a small model is mostly its $0.20 request; a chain "
        "pays a request per stage and Express's $1.00 execution with its 100 ms minimum on top.",
        MARK_END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50, help="warm calls per mode and example")
    parser.add_argument("--cold-share", type=float, default=0.01, help="share of cold calls to blend in")
    parser.add_argument("--only", nargs="*", help="examples to run (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        os.environ.setdefault(key, value)
    import boto3
    from botocore.config import Config
    from pipelines import EXAMPLES, ROLE, events, with_image

    from chalicelib.aws.functions import LambdaFunctionManager
    from chalicelib.aws.invoke import LambdaInvoker
    from chalicelib.local.launchers import ProcessImages
    from chalicelib.local.stack import LocalStack
    from chalicelib.services.intake import config_file_for_dir

    root = Path(tempfile.mkdtemp(prefix="bench-cost-"))
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
    rows: dict[str, dict[str, Measured]] = {}
    memory: dict[str, str] = {}
    try:
        for name, (_, event) in events().items():
            if args.only and name not in args.only:
                continue
            src = EXAMPLES / name
            manifest = config_file_for_dir(src)
            image = f"modelport/{name}:bench"
            images.write(image, src, manifest)
            memory[name] = f"{manifest.environment.memory_mb} MB {manifest.environment.architecture}"
            rows[name] = {}
            for version, mode in enumerate(MODES, start=1):  # a model without steps: a chain of one
                versioned: ModelConfigFile = with_image(manifest, image, version, mode)
                deployed = versioned.model_copy(
                    update={"deployment": manager.deploy(versioned, lambda line: None)}
                )
                assert deployed.deployment is not None
                measured: Measured | None = None
                for _ in range(args.calls + 1):
                    t0 = time.perf_counter()
                    answer = invoker.invoke(deployed.deployment, event)
                    wall_ms = (time.perf_counter() - t0) * 1000
                    assert answer["status"] == 200, answer
                    bill = bill_for(deployed, answer, wall_ms)
                    if measured is None:
                        measured = Measured(cold=bill)
                    else:
                        measured.warm.append(bill)
                        measured.wall_ms.append(wall_ms)
                assert measured is not None
                rows[name][mode] = measured
                print(
                    f"{name} {mode}: warm {median_billed_ms(measured.warm):g} ms billed, "
                    f"{dollars(per_million_pp(measured.warm))} / 1M; cold {measured.cold.billed_ms} ms, "
                    f"${usd(measured.cold.cost_pp)}",
                    flush=True,
                )
    finally:
        stack.stop()
    text = section(rows, memory, calls=args.calls, cold_share=args.cold_share)
    print(text)
    if not args.no_write:
        write_section("cost", text)


if __name__ == "__main__":
    main()
