"""Cold starts per example: a request that lands on no initialized environment, to its answer.

The local stack as ``modelport demo`` runs it (container environments; images built by the deploy worker
without a docker daemon and pulled from the local registry), each example deployed as its
``modelport.yaml`` says (``pipeline: auto`` picks fused or chained) and, where that is chained, again
with ``pipeline: fused``; plus ``iris-onnx-labels`` (iris-onnx without its chart: the plain ONNX tabular
case). For each deployment, ``--runs`` times: wait until the emulator has stopped every environment of
the stack (``idle_s`` is short here), then send the first sample through the API as a user does and time
it. That is a Lambda cold start as a caller sees it: the container starts (``docker run`` of the image),
Python imports, the model loads, the steps are built, then the request runs; for a chained pipeline, one
of those per stage, one after another. Beside it: the functions' own init (the ``init`` Server-Timing
entry of a fused call), a warm call, and the image's size (compressed, as the registry stores it and ECR
bills it; and unpacked, as ``docker image inspect`` reports it).

Targets (issue 15): ONNX tabular <= 400 ms, with a chart <= 600 ms, scikit-learn <= 1 s; ONNX tabular
images <= 200 MB. Writes the ``cold_starts`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import markers, write_section  # noqa: E402 - bench/results.py, beside this script

MARK_BEGIN, MARK_END = markers("cold_starts")
EXAMPLES = ROOT / "examples"
IDLE_S = 5.0
"""The emulator stops environments idle this long: every measured call starts from none (longer than a
chained pipeline's cold start, whose first stage would otherwise be stopped before its warm call)."""


@dataclass
class Row:
    name: str
    mode: str = "-"
    cold_ms: list[float] = field(default_factory=list)
    init_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    compressed_mb: float | None = None
    unpacked_mb: float | None = None
    starts: int = 0
    problem: str | None = None


def variants(work: Path, only: list[str]) -> list[tuple[str, Path]]:
    """(deployment name, its directory): each example as written, iris-onnx-labels, and a fused copy of
    each example whose own config leaves the choice to ``auto``."""
    chosen: list[tuple[str, Path]] = []
    for source in sorted(p.parent for p in EXAMPLES.glob("*/modelport.yaml")):
        if only and source.name not in only:
            continue
        chosen.append((source.name, source))
        text = (source / "modelport.yaml").read_text()
        if "pipeline:" not in text:
            chosen.append(_copy(work, source, f"{source.name}-fused", lambda t: t + "pipeline: fused\n"))
        if source.name == "iris-onnx":
            drop_chart = lambda t: "\n".join(x for x in t.splitlines() if "bar_chart" not in x) + "\n"  # noqa: E731
            chosen.append(_copy(work, source, "iris-onnx-labels", drop_chart))
    return chosen


def _copy(work: Path, source: Path, name: str, edit: Any) -> tuple[str, Path]:
    dest = work / name
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("batch"))
    config = dest / "modelport.yaml"
    text = re.sub(r"^name: .*$", f"name: {name}", config.read_text(), count=1, flags=re.MULTILINE)
    config.write_text(edit(text))
    return name, dest


def _all_stopped(emulator: Any, functions: tuple[str, ...], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(emulator.environments(f) for f in functions):
        if time.monotonic() > deadline:
            raise SystemExit(f"environments of {functions} still running after {timeout_s:.0f} s")
        time.sleep(0.1)


def _init_ms(server_timing: str) -> float | None:
    match = re.search(r"(?:^|,\s*)init;dur=([0-9.]+)", server_timing)
    return float(match.group(1)) if match else None


def _sizes(config: dict[str, Any]) -> tuple[float | None, float | None]:
    """(compressed MB from the association, unpacked MB from the engine) of the model's image."""
    association = config.get("container") or {}
    compressed = association.get("size_bytes")
    unpacked = None
    uri = association.get("image_uri")
    if uri:
        try:
            from chalicelib.docker import docker_client

            unpacked = docker_client().images.get(uri).attrs["Size"] / 1e6
        except Exception:  # not pulled (never ran) or no engine: leave it out
            unpacked = None
    return (compressed / 1e6 if compressed else None), unpacked


def measure(stack: Any, client: Any, name: str, model_dir: Path, runs: int) -> Row:
    from chalicelib.client import ApiError, deploy, function_names, invoke
    from chalicelib.core.config_file import ModelConfigFile
    from chalicelib.demo import samples_of

    row = Row(name)
    outcome = deploy(client, model_dir)
    if outcome.status != "READY" or outcome.config is None:
        row.problem = f"{outcome.status}: {outcome.reason}"
        return row
    manifest = ModelConfigFile.model_validate(outcome.config)
    row.mode = str((outcome.config.get("deployment") or {}).get("mode", "-"))
    sample = samples_of(model_dir, manifest)[0]
    functions = function_names(client, name)
    emulator = stack.emulator
    before = sum(emulator.started(f) for f in functions if _exists(emulator, f))
    for _ in range(runs):
        _all_stopped(emulator, functions)
        began = time.perf_counter()
        try:
            answer = invoke(client, name, sample.body, content_type=sample.content_type)
        except ApiError as exc:
            row.problem = f"HTTP {exc.status}: {exc}"
            return row
        row.cold_ms.append((time.perf_counter() - began) * 1000)
        init = _init_ms(answer.headers.get("server-timing", ""))
        if init is not None and row.mode == "fused":  # a chain's entry is one stage's
            row.init_ms.append(init)
        began = time.perf_counter()
        invoke(client, name, sample.body, content_type=sample.content_type)
        row.warm_ms.append((time.perf_counter() - began) * 1000)
    row.starts = sum(emulator.started(f) for f in functions if _exists(emulator, f)) - before
    row.compressed_mb, row.unpacked_mb = _sizes(outcome.config)
    return row


def _exists(emulator: Any, function: str) -> bool:
    try:
        emulator.started(function)
    except Exception:  # the emulator's not-found: a name this deployment does not use
        return False
    return True


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}" if values else "-"


def _mb(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def render(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        MARK_BEGIN,
        "## Cold starts per example (issue 15)",
        "",
        f"`python bench/cold_starts.py --runs {args.runs}` on {platform.machine()} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d')}. The local stack with container environments; images built by the "
        "deploy worker without a docker daemon and pulled from the local registry. Cold: the first sample "
        "sent through the API when the function has no environment (every one stopped first), to its "
        "answer, median of the runs: the container's start, imports, model load, steps and the request; "
        "a chained pipeline starts one container per stage in turn. Init: the fused function's own init "
        "phase (imports, model load, warm-up; the `init` Server-Timing entry). Image: the model image, "
        "compressed as the registry holds it (what ECR stores) and unpacked (`docker image inspect`).",
        "",
        "| deployment | mode | cold ms | init ms | warm ms | environments started | image MB compressed "
        "| image MB unpacked |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r.problem:
            lines.append(f"| {r.name} | {r.mode} | failed: {r.problem} | | | | | |")
            continue
        lines.append(
            f"| {r.name} | {r.mode} | {_ms(r.cold_ms)} | {_ms(r.init_ms)} | {_ms(r.warm_ms)} | "
            f"{r.starts} | {_mb(r.compressed_mb)} | {_mb(r.unpacked_mb)} |"
        )
    lines.append(MARK_END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--examples", nargs="*", default=[], help="example folder names (default: all)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from chalicelib.client import Client, Connection
    from chalicelib.local.stack import LocalStack

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="modelport-cold-") as tmp:
        stack = LocalStack(
            edge_port=0,
            api_port=0,
            launcher="container",
            emulator_options={"idle_s": IDLE_S},
            progress=lambda line: print(line, file=sys.stderr),
        ).start()
        try:
            client = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
            for name, model_dir in variants(Path(tmp), args.examples):
                print(f"{name} ...", file=sys.stderr)
                rows.append(measure(stack, client, name, model_dir, args.runs))
                print(rows[-1], file=sys.stderr)
        finally:
            stack.stop()
    section = render(rows, args)
    print(section)
    if not args.no_write:
        write_section("cold_starts", section)


if __name__ == "__main__":
    main()
