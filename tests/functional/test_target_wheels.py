"""Target python honesty, against the real package index: what has wheels on which Lambda base.

pip resolves (``install --dry-run --report``, metadata only) for the AWS bases' platforms as the image
builders do (``platform_tags`` of the base's glibc, ``--only-binary=:all:``). The deploy worker's pins must
resolve where ``modelport aws deploy`` builds it (python 3.12, Amazon Linux 2023), and the reason it is not
3.11 must still hold (Amazon Linux 2's glibc 2.26 has no numpy 2.4 wheel), or the choice is stale.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.core.environment import canonical_name
from chalicelib.docker.builder import AWS_GLIBC, DEFAULT_PINS
from chalicelib.docker.wheelhouse import platform_tags, resolve_wheels
from chalicelib.worker.image import AWS_WORKER_PYTHON, worker_recipe

pytestmark = pytest.mark.functional


def resolve(packages: tuple[str, ...], python: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    abi = "cp" + python.replace(".", "")
    tags = platform_tags("x86_64", AWS_GLIBC[python])
    return subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--target", str(tmp_path / "target"), "--only-binary=:all:", "--python-version", python,
            "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none",
            *[arg for tag in tags for arg in ("--platform", tag)],
            "--report", str(tmp_path / "report.json"), "--", *packages,
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_the_workers_pins_resolve_on_the_aws_base_it_is_built_on(tmp_path: Path) -> None:
    recipe = worker_recipe(python=AWS_WORKER_PYTHON)
    done = resolve(recipe.packages, recipe.python, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    chosen = {
        canonical_name(i["metadata"]["name"]) + "==" + i["metadata"]["version"] for i in report["install"]
    }
    pinned = {canonical_name(p) + "==" + p.split("==", 1)[1] for p in recipe.packages}  # PEP 503 names
    assert pinned <= chosen, pinned - chosen  # the exact versions the tests run, not older ones


def test_amazon_linux_2_has_no_wheel_of_the_pinned_numpy(tmp_path: Path) -> None:
    done = resolve(("numpy==2.4.6",), "3.11", tmp_path)
    assert done.returncode != 0
    assert "No matching distribution found for numpy==2.4.6" in done.stderr


def test_a_default_pin_is_taken_at_the_newest_version_amazon_linux_2_has_a_wheel_of(tmp_path: Path) -> None:
    lines: list[str] = []
    house = resolve_wheels(
        ("numpy==2.4.6",), python="3.11", architecture="x86_64", progress=lines.append,
        cache_dir=tmp_path, glibc=AWS_GLIBC["3.11"], relaxable=DEFAULT_PINS,
    )  # fmt: skip
    (numpy,) = [r for r in house.requirements if r.startswith("numpy==")]
    major, minor = (int(x) for x in numpy.removeprefix("numpy==").split(".")[:2])
    assert (major, minor) < (2, 4)
    assert any("no wheel of numpy==2.4.6 for CPython 3.11 manylinux_2_26_x86_64" in line for line in lines)
