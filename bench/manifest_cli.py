"""How long `modelport manifest` takes per example, as a user sees it (whole process, cold imports).

Runs each command several times and reports median / min / max wall time beside a bare interpreter start,
so the ratio shows what our imports and inspection cost. Writes the table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results import markers, write_section  # bench/results.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = markers("manifest_cli")


def timed(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    baseline = timed([sys.executable, "-c", "pass"], args.runs)
    base_median = statistics.median(baseline)
    rows = [("python -c pass (baseline)", baseline)]
    for example in sorted((ROOT / "examples").glob("*/modelport.yaml")):
        cmd = [sys.executable, "-m", "chalicelib.cli", "manifest", str(example.parent)]
        rows.append((f"modelport manifest examples/{example.parent.name}", timed(cmd, args.runs)))

    lines = [
        MARK_BEGIN,
        "## `modelport manifest` per example (whole process)",
        "",
        f"`python bench/manifest_cli.py --runs {args.runs}` on {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}. Wall time per run of a new process.",
        "",
        "| command | median ms | min ms | max ms | x baseline |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, times in rows:
        med = statistics.median(times)
        lines.append(
            f"| {name} | {med * 1000:.0f} | {min(times) * 1000:.0f} | {max(times) * 1000:.0f} "
            f"| {med / base_median:.1f} |"
        )
    lines.append(MARK_END)
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    write_section("manifest_cli", table)


if __name__ == "__main__":
    main()
