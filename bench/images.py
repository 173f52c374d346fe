"""Container images per example: size and what is in it, cold build, model-only rebuild, cold start.

For each example (plus ``iris-onnx-labels``, iris-onnx without its bar chart: the plain ONNX tabular case;
``iris-skops-onnx`` is iris-skops's model converted at deploy time, served as ONNX with labels only):

- **image size**, split into the base, venv (environment), runtime-code and model layers (``docker history``);
- **cold build**: the environment image removed first, so the venv is installed again (wheels come from the
  wheelhouse cache; ``--cold-wheels`` also empties that, so pip downloads them: network-bound);
- **rebuild** after a model-only change (a new ``model.*`` file, everything else equal): the median of
  ``--runs`` rebuilds, each with a different file;
- **start to first response**: ``docker run`` (Lambda's constraints: read-only root, tmpfs /tmp, uid 1000,
  512 MB, host network) to the first answer through our Runtime API server, median of ``--runs``; the
  container's own init (imports, model load, warm-up) is reported beside it;
- **warm** round trip median through the Runtime API.

Writes a section into bench/RESULTS.md (between markers; other sections are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import markers, write_section  # noqa: E402 - bench/results.py, beside this script

from chalicelib.core.wire import JSON, InvocationEvent, invocation_event  # noqa: E402
from chalicelib.docker.builder import BuildReport, DockerImageBuilder  # noqa: E402
from chalicelib.local.runtime_api import RuntimeApiServer  # noqa: E402
from chalicelib.services.intake import config_file_for_dir  # noqa: E402

NOTES = """
What is in the size. **base**: Debian 12 minbase + python3 from debootstrap, docs, man pages, locales,
gconv and apt lists removed. **venv**: the environment's wheels installed with their `.pyc` files, minus the
packages' test suites, the venv's pip/setuptools and onnxruntime's C-API library (35 MB, which its Python
binding does not load); onnxruntime is 36 MB of it, numpy + OpenBLAS 56 MB, matplotlib with Pillow,
fontTools, kiwisolver and contourpy about 90 MB, scikit-learn + scipy + skops about 150 MB. **code**:
`chalicelib/{core,runtime}` with hash-checked `.pyc`. **model**: the artifact and `model-config.json`. The
wheels themselves never ship: they are installed in a build stage and only `/opt/env` is copied.

Cold build = resolving the wheels (cached here; a first download adds ~5-15 s) and installing them in a
build stage, then the model image. A model-only rebuild reuses the environment image and the runtime-code
layer from the build cache; only the model layer (the last) is new. Start to first response includes
`docker run` itself (~0.3 s), the imports and the runtime's warm-up request. Without `.pyc` files the
read-only root makes Python compile every module in memory at each cold start (the column beside it).
iris-onnx draws a bar chart per answer: importing matplotlib's pyplot and building its font cache in /tmp
is most of its extra init; iris-skops pays for skops.io importing every scikit-learn estimator module.
breast-cancer-xgboost's venv is xgboost-cpu (its wheel, not xgboost's, which pulls in NVIDIA's NCCL),
scipy (110 MB with its libraries; xgboost requires it) and matplotlib for its chart.
"""
MARK_BEGIN, MARK_END = markers("images")
EXAMPLES = ROOT / "examples"
IRIS = {"rows": [[5.1, 3.5, 1.4, 0.2]]}
DIGIT = EXAMPLES / "digits-onnx" / "samples" / "digit-7.png"
TUMOURS = EXAMPLES / "breast-cancer-xgboost" / "samples" / "tumours.csv"


def event_for(name: str) -> InvocationEvent:
    if name.startswith("digits"):
        return invocation_event(DIGIT.read_bytes(), "image/png", "*/*")
    if name.startswith("breast-cancer"):
        return invocation_event(TUMOURS.read_text(), "text/csv", JSON)
    return invocation_event(json.dumps(IRIS), JSON)


def copy_example(name: str, work: Path) -> Path:
    """A private copy of the example (``iris-onnx-labels``: iris-onnx without the bar chart)."""
    source = EXAMPLES / ("iris-onnx" if name == "iris-onnx-labels" else name)
    dest = work / name
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".modelport"))  # intake makes it again
    if name == "iris-onnx-labels":
        config = dest / "modelport.yaml"
        text = config.read_text().replace("name: iris-onnx", f"name: {name}")
        text = "\n".join(line for line in text.splitlines() if "bar_chart" not in line) + "\n"
        config.write_text(text)
    return dest


def change_model(model_dir: Path, n: int) -> None:
    """Make the model file different but valid: ONNX metadata, or a zip comment in a .skops file."""
    for path in model_dir.iterdir():
        if path.suffix == ".onnx":
            import onnx

            model = onnx.load(str(path))
            for old in [p for p in model.metadata_props if p.key == "bench"]:
                model.metadata_props.remove(old)
            entry = model.metadata_props.add()
            entry.key, entry.value = "bench", str(n)
            onnx.save(model, str(path))
            return
        if path.suffix == ".skops":
            with zipfile.ZipFile(path, "a") as archive:
                archive.comment = f"bench {n}".encode()
            return
        if path.suffix == ".json" and path.name != "model-config.json":  # XGBoost: a booster attribute
            doc = json.loads(path.read_text())
            doc["learner"].setdefault("attributes", {})["bench"] = str(n)
            path.write_text(json.dumps(doc))
            return
    raise SystemExit(f"no model file to change in {model_dir}")


def layer_sizes(client: Any, image: str) -> dict[str, float]:
    """MB per layer kind, from the image's history (newest first: model, code, venv, base)."""
    sizes = [h["Size"] / 1e6 for h in client.api.history(image) if h["Size"] > 0 or "COPY" in h["CreatedBy"]]
    model, code, venv, *base = sizes
    return {"base": sum(base), "venv": venv, "code": code, "model": model}


def first_response(
    client: Any, image: str, event: dict[str, Any], env: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """(docker run -> first answer s, the container's init_ms, warm median ms)."""
    with RuntimeApiServer(function_name="bench") as server:
        start = time.perf_counter()
        container = client.containers.run(
            image,
            detach=True,
            network_mode="host",
            read_only=True,
            tmpfs={"/tmp": "rw,size=512m"},
            user="1000:1000",
            mem_limit="512m",
            environment={"AWS_LAMBDA_RUNTIME_API": server.url, **(env or {})},
        )
        try:
            result = server.invoke(event, timeout=120)
            elapsed = time.perf_counter() - start
            if result.error is not None:
                raise SystemExit(f"{image}: {result.error}")
            init_ms = float(json.loads(result.payload)["timings"].get("init_ms", 0.0))
            warm = []
            for _ in range(30):
                t = time.perf_counter()
                server.invoke(event, timeout=10)
                warm.append((time.perf_counter() - t) * 1000)
        finally:
            container.remove(force=True)
    return elapsed, init_ms, statistics.median(warm)


def measure(client: Any, name: str, runs: int, cold_wheels: bool, work: Path) -> dict[str, Any]:
    src = copy_example(name, work)
    builder = DockerImageBuilder(client, cache_dir=(work / "cache") if cold_wheels else None)
    quiet = lambda line: None  # noqa: E731
    warm_report = builder.build_image(config_file_for_dir(src), src, quiet)
    # Cold: remove the environment image (and so every model image on it), then build again.
    env_tag = warm_report.environment_image
    for image in client.images.list(filters={"label": f"dev.modelport.environment-image={env_tag}"}):
        client.api.remove_image(image.id, force=True)
    client.api.remove_image(env_tag, force=True)
    start = time.perf_counter()
    cold: BuildReport = builder.build_image(config_file_for_dir(src), src, quiet)
    cold_s = time.perf_counter() - start
    assert cold.environment_built
    rebuilds = []
    for n in range(runs):
        change_model(src, n)
        manifest = config_file_for_dir(src)
        start = time.perf_counter()
        report = builder.build_image(manifest, src, quiet)
        rebuilds.append(time.perf_counter() - start)
        assert not report.environment_built
    image = report.association.image_uri
    starts = [first_response(client, image, event_for(name)) for _ in range(runs)]
    # The same without any .pyc (a cache prefix that does not exist): what the precompiling saves.
    no_pyc = {"PYTHONPYCACHEPREFIX": "/nonexistent"}
    cold_compiles = [first_response(client, image, event_for(name), no_pyc)[0] for _ in range(runs)]
    return {
        "name": name,
        "size": report.association.size_bytes / 1e6,
        "layers": layer_sizes(client, image),
        "wheels": cold.wheels,
        "cold_s": cold_s,
        "cold_env_s": cold.timings.get("environment_s", 0.0),
        "cold_wheels_s": cold.timings.get("wheels_s", 0.0),
        "rebuild_s": statistics.median(rebuilds),
        "start_s": statistics.median(s[0] for s in starts),
        "start_no_pyc_s": statistics.median(cold_compiles),
        "init_ms": statistics.median(s[1] for s in starts),
        "warm_ms": statistics.median(s[2] for s in starts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--examples",
        nargs="*",
        default=[
            "iris-onnx",
            "iris-onnx-labels",
            "iris-skops",
            "iris-skops-onnx",
            "digits-onnx",
            "breast-cancer-xgboost",
        ],
    )
    parser.add_argument("--cold-wheels", action="store_true", help="also empty the wheel cache (downloads)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import docker

    client = docker.from_env(timeout=900)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelport-bench-") as tmp:
        for name in args.examples:
            print(f"measuring {name} ...", file=sys.stderr)
            rows.append(measure(client, name, args.runs, args.cold_wheels, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr)

    load_after = os.getloadavg()[0]
    engine = client.version()
    lines = [
        MARK_BEGIN,
        "## Container images per example",
        "",
        f"`python bench/images.py --runs {args.runs}{' --cold-wheels' if args.cold_wheels else ''}` on "
        f"{platform.machine()}, docker engine {engine.get('Version')} (legacy builder, host network), "
        f"{time.strftime('%Y-%m-%d')}. Local base `modelport/base:py3.11-bookworm` (Debian 12, python "
        f"3.11.2). Medians of {args.runs} runs. `iris-onnx-labels` is iris-onnx without its bar chart "
        f"(no matplotlib). Load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on "
        f"{os.cpu_count()} cores: other work on the machine slows the cold starts.",
        "",
        "| example | image MB | base / venv / code / model MB | wheels | cold build s | "
        "model-only rebuild s | docker run to first response s | same without .pyc s | init in container ms "
        "| warm ms |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        layers = r["layers"]
        split = f"{layers['base']:.0f} / {layers['venv']:.0f} / {layers['code']:.2f} / {layers['model']:.3f}"
        lines.append(
            f"| {r['name']} | {r['size']:.0f} | {split} | {r['wheels']} | {r['cold_s']:.1f} | "
            f"{r['rebuild_s']:.2f} | {r['start_s']:.2f} | {r['start_no_pyc_s']:.2f} | {r['init_ms']:.0f} | "
            f"{r['warm_ms']:.2f} |"
        )
    lines += ["", *NOTES.strip().splitlines()]
    lines.append(MARK_END)
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    write_section("images", table)


if __name__ == "__main__":
    main()
