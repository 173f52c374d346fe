"""The deploy worker's container image, as data, and its build by Modelport's own daemonless builder.

The worker runs the inspectors (numpy, onnx, scikit-learn, skops) and the ``runtime: onnx`` conversion
(skl2onnx, and onnxruntime to run the graph beside the estimator), talks to AWS (boto3, which an image
function does not get from the runtime) and builds model images with ``chalicelib.oci`` (which runs
``pip download`` to resolve wheels, so pip is in the image). It runs under ``awslambdaric``. It never runs the
CLI, the demo, the local stack or the API, so their files and their packages (Chalice, click, the docker
SDK) stay out: the image is what Lambda runs on AWS and what the local stack's emulator runs here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib.core.ports import Progress

if TYPE_CHECKING:
    from chalicelib.oci.builder import OciImageBuilder

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHALICELIB = PROJECT_ROOT / "chalicelib"

# requirements-dev.txt pins these for the tests; the worker's image needs the same versions.
FROM_DEV = ("boto3", "awslambdaric")
# What chalicelib.oci runs at build time: `pip download` resolves the model images' wheels.
BUILDER_RUNTIME = ("pip==26.2.2.post1",)
# The worker's python on AWS: Lambda's python:3.12 base is Amazon Linux 2023 (glibc 2.34), where every pin of
# requirements*.txt has a wheel; the 3.11 base is Amazon Linux 2 (glibc 2.26), which numpy 2.4, onnx 1.23 and
# scikit-learn 1.9 ship none for. The local stack's worker is 3.11, on the debootstrap base (bookworm has no
# 3.12). The worker builds images for any target python: pip resolves for the target, nothing runs.
AWS_WORKER_PYTHON = "3.12"
# chalicelib's parts the worker never runs (entry points for people, and the local stack).
NOT_IN_WORKER = frozenset({"local", "cli.py", "demo.py", "client.py", "api", "console"})


def requirement_pins(path: Path) -> list[str]:
    """The ``name==version`` lines of a requirements file (comments and ``-r`` includes skipped)."""
    pins = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            pins.append(line)
    return pins


def _name(pin: str) -> str:
    return pin.split("==", 1)[0].split("[", 1)[0].strip().lower()


@dataclass(frozen=True)
class WorkerRecipe:
    """What goes into the worker's image; ``build_worker_image`` hands it to the builder unchanged."""

    repository: str = "modelport-deploy-worker"
    python: str = "3.11"
    architecture: str = "x86_64"
    handler: str = "chalicelib.worker.handler"
    packages: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def code(self) -> list[tuple[str, Path]]:
        """(path under /var/task, source file) for every chalicelib file the worker may import."""
        return sorted(_worker_files(CHALICELIB))


def _worker_files(root: Path) -> Iterator[tuple[str, Path]]:
    for found in root.rglob("*"):
        rel = found.relative_to(root)
        if not found.is_file() or "__pycache__" in rel.parts or found.suffix == ".pyc":
            continue
        if rel.parts[0] in NOT_IN_WORKER:
            continue
        yield f"chalicelib/{rel.as_posix()}", found


def worker_recipe(project_root: Path = PROJECT_ROOT, *, python: str = "3.11") -> WorkerRecipe:
    """The recipe from the project's requirements files (one source of truth for the versions)."""
    packages = requirement_pins(project_root / "requirements.txt")
    packages += requirement_pins(project_root / "requirements-worker.txt")
    dev = {_name(p): p for p in requirement_pins(project_root / "requirements-dev.txt")}
    packages += [dev[name] for name in FROM_DEV]
    packages += BUILDER_RUNTIME
    return WorkerRecipe(
        python=python,
        packages=tuple(sorted(packages, key=_name)),
        # The worker is a Lambda function: it builds daemonlessly and manages Lambda functions. The stage's
        # settings (tables, buckets, registry) come with the function's configuration, not the image.
        env={
            "MODELPORT_IMAGE_BUILDER": "oci",
            "MODELPORT_FUNCTIONS": "lambda",
            "MODELPORT_SANDBOX": "lambda",
            # Lambda's one writable place: wheelhouses and environment layers of a warm worker stay there.
            "MODELPORT_CACHE": "/tmp/modelport",  # noqa: S108
        },
    )


def build_worker_image(
    builder: OciImageBuilder, progress: Progress, recipe: WorkerRecipe | None = None
) -> str:
    """Build and push the worker's image; returns ``REGISTRY/REPOSITORY@sha256:...``."""
    recipe = recipe or worker_recipe()
    return builder.build_service_image(
        recipe.repository,
        packages=recipe.packages,
        python=recipe.python,
        architecture=recipe.architecture,
        code=recipe.code(),
        handler=recipe.handler,
        env=recipe.env,
        progress=progress,
    )
