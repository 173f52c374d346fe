"""The daemonless builder beside the docker builder: a new version of iris-onnx (a retrained model file, the
environment unchanged) built and pushed to a local registry, median of ``--runs``; plus the cold environment
layer (wheels already in the wheelhouse cache) and the bytes each push uploads.

Starts Debian's docker-registry on a free port; needs the docker engine only for the docker builder's column
and to hand the local base to the registry (``docker save``). Writes a section into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import markers, write_section  # noqa: E402 - bench/results.py, beside this script

from chalicelib.docker.builder import DockerImageBuilder  # noqa: E402
from chalicelib.docker.registry import start_registry, stop_registry  # noqa: E402
from chalicelib.oci.base import ensure_local_base  # noqa: E402
from chalicelib.oci.builder import OciImageBuilder  # noqa: E402
from chalicelib.services.intake import config_file_for_dir  # noqa: E402

EXAMPLE = ROOT / "examples" / "iris-onnx"


def _retrained(dest: Path, n: int) -> Path:
    import onnx

    shutil.copytree(EXAMPLE, dest)
    model = onnx.load(str(dest / "model.onnx"))
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "coefficients" and attr.floats:
                attr.floats[0] += 0.001 * n
    onnx.save(model, str(dest / "model.onnx"))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        registry = start_registry(port, work / "registry")
        try:
            ensure_local_base(registry, "3.11", lambda _: None)
            cold_cache = work / "cache"
            shutil.copytree(OciImageBuilder(registry).cache_dir / "wheels", cold_cache / "wheels")
            t = time.perf_counter()
            OciImageBuilder(registry, cache_dir=cold_cache).build_image(
                config_file_for_dir(EXAMPLE), EXAMPLE, lambda _: None
            )
            cold = time.perf_counter() - t
            oci = OciImageBuilder(registry, cache_dir=cold_cache)
            docker = DockerImageBuilder(registry=registry)
            docker.build_image(config_file_for_dir(EXAMPLE), EXAMPLE, lambda _: None)
            rows: dict[str, list[float]] = {"oci": [], "docker": []}
            uploaded: list[int] = []
            for n in range(1, args.runs + 1):
                src = _retrained(work / f"v{n}", n)
                doc = config_file_for_dir(src, version=n + 1)
                t = time.perf_counter()
                made = oci.build_image(doc, src, lambda _: None)
                rows["oci"].append(time.perf_counter() - t)
                uploaded.append(len(made.uploaded))
                t = time.perf_counter()
                docker.build_image(doc, src, lambda _: None)
                rows["docker"].append(time.perf_counter() - t)
        finally:
            stop_registry(port, work / "registry")
    oci_s, docker_s = statistics.median(rows["oci"]), statistics.median(rows["docker"])
    begin, end = markers("oci-builder")
    section = "\n".join(
        [
            begin,
            "## Daemonless builder beside the docker builder (issue 12)",
            "",
            f"`python bench/oci_builder.py --runs {args.runs}` on {platform.machine()}, "
            f"{time.strftime('%Y-%m-%d')}: iris-onnx, a new version (retrained model file, same "
            "environment), "
            "built and pushed to a local registry (Debian's docker-registry), median of the runs.",
            "",
            "| | daemonless (oci) | docker engine |",
            "| --- | --- | --- |",
            f"| new version, unchanged environment: build + push | {oci_s:.2f} s | {docker_s:.2f} s |",
            f"| blobs uploaded per new version | {statistics.median(uploaded):.0f} (model layer + config) "
            "| |",
            f"| first image on a machine (environment layer made from cached wheels) | {cold:.1f} s | |",
            "",
            end,
        ]
    )
    write_section("oci-builder", section + "\n")
    print(section)


if __name__ == "__main__":
    main()
