"""The deploy worker's image recipe: the right pins, no control-plane-only packages, code that imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.environment import PINS
from chalicelib.worker.image import WorkerRecipe, build_worker_image, requirement_pins, worker_recipe

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def names(pins: tuple[str, ...] | list[str]) -> set[str]:
    return {p.split("==")[0].lower() for p in pins}


def test_the_packages_are_the_api_and_worker_pins_plus_boto3_awslambdaric_and_pip() -> None:
    recipe = worker_recipe()
    expected = requirement_pins(ROOT / "requirements.txt") + requirement_pins(
        ROOT / "requirements-worker.txt"
    )
    assert set(expected) <= set(recipe.packages)
    dev = set(requirement_pins(ROOT / "requirements-dev.txt"))
    assert {p for p in recipe.packages if p.startswith(("boto3==", "awslambdaric=="))} <= dev
    assert {"boto3", "awslambdaric", "pip", "numpy", "onnx", "pydantic"} <= names(recipe.packages)
    assert all(p.count("==") == 1 for p in recipe.packages)  # pinned: the same image from the same inputs
    assert len(names(recipe.packages)) == len(recipe.packages)


def test_the_worker_can_convert_scikit_learn_models_to_onnx() -> None:
    """runtime: onnx converts at deploy time, in the worker: skl2onnx, and onnxruntime for the proof."""
    pins = {p.split("==")[0].lower(): p for p in worker_recipe().packages}
    assert {"skl2onnx", "onnx", "onnxruntime", "scikit-learn", "skops"} <= set(pins)
    assert pins["onnxruntime"] == f"onnxruntime=={PINS['onnxruntime']}"  # the one the model images run


def test_no_control_plane_or_engine_packages_go_into_the_worker() -> None:
    assert not names(worker_recipe().packages) & {"chalice", "docker", "click", "moto", "pytest"}


def test_the_code_is_chalicelib_without_the_cli_the_api_and_the_local_stack() -> None:
    paths = [rel for rel, _ in worker_recipe().code()]
    assert "chalicelib/worker/__init__.py" in paths and "chalicelib/oci/builder.py" in paths
    assert "chalicelib/runtime/__init__.py" in paths  # the model images' runtime code is copied from here
    assert not [
        p
        for p in paths
        if p.startswith(("chalicelib/local/", "chalicelib/api/", "chalicelib/console/")) or "__pycache__" in p
    ]
    assert not {"chalicelib/cli.py", "chalicelib/demo.py", "chalicelib/client.py"} & set(paths)
    assert all(src.is_file() for _, src in worker_recipe().code())


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("chalice", "docker", "click"):
            raise ImportError("not in the worker image: " + name)
sys.meta_path.insert(0, Block())
import chalicelib, chalicelib.worker, chalicelib.wiring, chalicelib.oci.builder
from chalicelib.settings import Settings
c = chalicelib.wiring.aws_container(Settings(image_builder="oci", registry="127.0.0.1:5000"))
assert type(c.images).__name__ == "OciImageBuilder", c.images
assert chalicelib.__file__.startswith(sys.argv[1]), chalicelib.__file__
print(chalicelib.worker.handler({"Records": []}, None))
"""


def test_the_handler_imports_from_the_listed_code_alone_without_chalice_or_docker(tmp_path: Path) -> None:
    task = tmp_path / "task"
    for rel, src in worker_recipe().code():
        (task / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, task / rel)
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(task)], cwd=task, env={"PYTHONPATH": str(task),
        "AWS_DEFAULT_REGION": "us-east-1"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'batchItemFailures': []}"


class RecordingBuilder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def build_service_image(self, repository: str, **kwargs: Any) -> str:
        self.calls.append((repository, kwargs))
        return f"127.0.0.1:5000/{repository}@sha256:" + "0" * 64


def test_build_worker_image_hands_the_recipe_to_the_builder() -> None:
    builder, said = RecordingBuilder(), list[str]()
    recipe = WorkerRecipe(packages=("numpy==2.4.6",), env={"A": "b"})
    ref = build_worker_image(builder, said.append, recipe)  # type: ignore[arg-type]
    assert ref.endswith("@sha256:" + "0" * 64)
    ((repository, kwargs),) = builder.calls
    assert repository == "modelport-deploy-worker"
    assert kwargs["handler"] == "chalicelib.worker.handler" and kwargs["packages"] == ("numpy==2.4.6",)
    assert kwargs["env"] == {"A": "b"} and kwargs["python"] == "3.11" and kwargs["code"] == recipe.code()
