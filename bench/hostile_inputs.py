"""What each parsing attack on the deploy worker costs: seconds and peak RSS, one fresh process per attack.

Each attack runs the real entry point (``parse_config_yaml``, ``inspect_model``, ``detect``,
``extract_bundle``) in its own interpreter under RLIMIT_AS (2 GB), so a regression shows as a MemoryError
rather than taking the machine down. Writes the ``hostile-inputs`` section of bench/RESULTS.md.

    PYTHONPATH=$PWD python bench/hostile_inputs.py
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

from results import markers, write_section

ROOT = Path(__file__).resolve().parents[1]

SETUP = r"""
import io, resource, struct, sys, tarfile, tempfile, time, zipfile
from pathlib import Path
limit = 2 * 1024**3
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from chalicelib.core.config import ModelConfig, parse_config_yaml
from chalicelib.inspect import detect, inspect_model
from chalicelib.services.bundles import extract_bundle
work = Path(tempfile.mkdtemp())
"""

ATTACKS: dict[str, tuple[str, str]] = {
    "modelport.yaml alias bomb (9 levels)": (
        "384 bytes",
        r"""
from tests.unit.security.test_config_bombs import alias_bomb
run = lambda: parse_config_yaml(alias_bomb())
""",
    ),
    "model.ubj claiming 65 million nulls": (
        "598 bytes",
        r"""
(work / "m").mkdir()
claim = b"[$Z#l" + struct.pack(">i", 1_000_000)
(work / "m" / "model.ubj").write_bytes(b"{U\x07learner[" + claim * 65 + b"]}")
run = lambda: inspect_model(work / "m", ModelConfig(name="m"))
""",
    ),
    "30 MB data.json of empty arrays beside a model (detection)": (
        "30 MB",
        r"""
(work / "model.onnx").write_bytes(b"x")
(work / "data.json").write_bytes(b"[" + b"[]," * 10_000_000 + b"[]]")
run = lambda: detect(work, ModelConfig(name="m"))
""",
    ),
    "tar.gz with a 64 MB pax header": (
        "~65 KB",
        r"""
info = tarfile.TarInfo("model.onnx")
info.pax_headers = {"comment": "x" * (64 * 1024 * 1024)}
with tarfile.open(work / "b.tar.gz", "w:gz", format=tarfile.PAX_FORMAT) as tf:
    tf.addfile(info, io.BytesIO(b""))
del info
(work / "d").mkdir()
run = lambda: extract_bundle(work / "b.tar.gz", work / "d")
""",
    ),
    "zip with 200,000 empty members": (
        "~22 MB",
        r"""
with zipfile.ZipFile(work / "b.zip", "w") as zf:
    for i in range(200_000):
        zf.writestr(f"f{i}", b"")
(work / "d").mkdir()
run = lambda: extract_bundle(work / "b.zip", work / "d")
""",
    ),
}

MEASURE = r"""
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    run()
    outcome = "accepted"
except BaseException as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[:90]
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import json
growth = max(peak - base, 0) / 1024
print(json.dumps({"seconds": elapsed, "peak_mb": peak / 1024, "growth_mb": growth, "outcome": outcome}))
"""


def measure(code: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", SETUP + code + MEASURE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return {
            "seconds": float("nan"),
            "peak_mb": float("nan"),
            "growth_mb": 0,
            "outcome": result.stderr[-200:],
        }
    doc: dict[str, object] = json.loads(lines[-1])
    return doc


def main() -> None:
    only = sys.argv[1] if len(sys.argv) > 1 else ""  # a substring: measure (and print) only those
    rows = []
    for name, (size, code) in ATTACKS.items():
        if only not in name:
            continue
        m = measure(code)
        print(f"{name}: {m}", flush=True)
        outcome = str(m["outcome"]).replace("|", "/")
        ms, growth = float(str(m["seconds"])) * 1000, float(str(m["growth_mb"]))
        rows.append(f"| {name} | {size} | {ms:.1f} | {growth:.0f} | {outcome} |")
    if only:
        return
    begin, end = markers("hostile-inputs")
    section = "\n".join(
        [
            begin,
            "## Hostile inputs to the deploy worker",
            "",
            f"`PYTHONPATH=$PWD python bench/hostile_inputs.py` on {platform.machine()}, Python "
            f"{platform.python_version()}: one fresh process per attack under RLIMIT_AS 2 GB; time of the "
            "call and RSS growth during it.",
            "",
            "| attack | file | ms | RSS growth (MB) | outcome |",
            "| --- | --- | ---: | ---: | --- |",
            *rows,
            "",
            "Before (main at aeb40e6, same inputs; the first two measured with equivalent one-off scripts, "
            "the rest with this one): the alias bomb took 81.5 s and 657 MB under "
            "a 1 GB RLIMIT_AS (5.6 GB and SIGABRT without one, per issue 10); the UBJSON bomb 114.9 s and "
            "523 MB; detection of the 30 MB data.json 13.4 s and 689 MB (it was parsed in full); the pax "
            "bundle 3.5 s, accepted (tarfile read the whole 64 MB header into memory); the 200,000-member "
            "zip 5.6 s and 116 MB before the member count was checked. RSS growth is 0 where setting the "
            "attack up (writing the archive) already peaked higher than the call.",
            end,
        ]
    )
    write_section("hostile-inputs", section)


if __name__ == "__main__":
    main()
