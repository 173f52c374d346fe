"""runtime/ runs inside the model container: it must not pull in chalice, boto3 or the control plane."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import chalicelib.runtime

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "chalice",
    "boto3",
    "botocore",
    "docker",
    "chalicelib.services",
    "chalicelib.api",
    "chalicelib.aws",
    "chalicelib.docker",
    "chalicelib.local",
    "chalicelib.inspect",
    "chalicelib.cli",
    "yaml",  # not in a model's image (docker.builder.RUNTIME_PACKAGES): its config file is JSON
)


def test_runtime_modules_import_nothing_of_the_control_plane() -> None:
    modules = ["chalicelib.runtime"] + [
        f"chalicelib.runtime.{m.name}" for m in pkgutil.iter_modules(chalicelib.runtime.__path__)
    ]
    probe = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r} "
        f"or any(n == f or n.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == ""
    assert len(modules) >= 2
