"""The ``ImageBuilder`` for machines without a docker engine: *process images* the emulator runs as processes.

A process image is an image's content as directories (``local.launchers.ProcessImages`` reads them): a
virtualenv with the environment's packages, the runtime code, and the prepared model directory. The
virtualenv is made from the same wheelhouse the docker builder installs into images (``resolve_wheels`` for
this host's glibc, then ``pip install --no-index``), once per environment and shared by every model with
that environment, like an environment image. Only an environment for this interpreter's python can run
here; any other is refused with the fix (a docker engine). It lives with the other builders; the local
stack only runs what it builds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from chalicelib.core.config_file import ContainerAssociation, ModelConfigFile
from chalicelib.core.environment import ResolvedEnvironment
from chalicelib.core.errors import ArtifactError
from chalicelib.core.pipeline import stage_environments
from chalicelib.core.ports import AssociationStore, Clock, Progress
from chalicelib.core.records import EnvironmentImage
from chalicelib.docker import ImageError, cache_root
from chalicelib.docker.builder import DEFAULT_PINS, DockerImageBuilder, runtime_code_digest, runtime_files
from chalicelib.docker.wheelhouse import parse_glibc, resolve_wheels
from chalicelib.runtime.layout import prepare_model_dir

HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
ENV_MARKER = ".modelport-env"
PROCESS_IMAGE_FILE = "process-image.json"
"""What ``local.launchers.ProcessImages`` reads in an image's directory (python, pythonpath, model_dir)."""


def image_key(image_uri: str) -> str:
    """The directory of an image under the root: ``modelport/iris-onnx:v1`` is ``modelport_iris-onnx_v1``
    (as ``local.launchers.ProcessImages.key`` names it)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", image_uri).strip("._") or "_"


def host_glibc() -> tuple[int, int]:
    """The glibc this host's processes load (``os.confstr`` says ``glibc 2.36``)."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
        return parse_glibc(text.split()[-1])
    except (ValueError, OSError, IndexError):
        return (2, 17)


class ProcessImageBuilder:
    """Builds process images under ``root`` (default ``<cache>/process-images``, where the local stack's
    ``ProcessImages`` looks) and environments under ``<cache>/process-envs``.

    As ``DockerImageBuilder``, it reads the recorded pipeline plan: where pre and post run on the shared
    steps image, the model's image leaves the step packages out and the association names that steps image
    (its environment and the runtime code, no model). ``associations``: where the environments it makes
    are recorded."""

    kind = "process"

    def __init__(
        self,
        root: Path | None = None,
        *,
        cache_dir: Path | None = None,
        associations: AssociationStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cache_dir = cache_dir if cache_dir is not None else cache_root()
        self.root = root if root is not None else self.cache_dir / "process-images"
        self.associations = associations
        self.clock = clock

    def build(self, manifest: ModelConfigFile, bundle_dir: Path, progress: Progress) -> ContainerAssociation:
        env = manifest.environment
        if env.python != HOST_PYTHON:
            raise ImageError(
                f"{manifest.name} needs python {env.python}; without a docker engine only this host's "
                f"python {HOST_PYTHON} can run it",
                hint="start a docker engine, or set environment.python to " + HOST_PYTHON,
            )
        model_env, steps_env = stage_environments(manifest)
        key, venv = self._venv(model_env, progress)
        image_uri = f"modelport/{manifest.name}:v{manifest.version}"
        directory = self.root / image_key(image_uri)
        code, code_hash = self._code(directory)
        digest = hashlib.sha256(f"{key}\n{code_hash}\n{manifest.digest}".encode()).hexdigest()
        try:
            prepare_model_dir(bundle_dir, manifest, directory / "model")
        except ValueError as exc:  # LayoutError: a file the manifest names is missing or changed
            raise ArtifactError(str(exc)) from None
        doc = {"python": str(venv / "bin" / "python"), "pythonpath": str(code), "model_dir": "model",
               "digest": f"sha256:{digest}"}  # fmt: skip
        (directory / PROCESS_IMAGE_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        size = sum(p.stat().st_size for p in (directory / "model").rglob("*") if p.is_file())
        progress(f"built process image {image_uri} (environment {key})")
        return ContainerAssociation(
            environment_image=f"process-env/{key}",
            image_uri=image_uri,
            image_digest=f"sha256:{digest}",
            size_bytes=size,
            steps_image=None if steps_env is None else self._steps_image(steps_env, progress),
        )

    def _venv(self, env: ResolvedEnvironment, progress: Progress) -> tuple[str, Path]:
        house = resolve_wheels(
            DockerImageBuilder.packages_of(env),
            python=env.python,
            architecture=env.architecture,
            cache_dir=self.cache_dir,
            glibc=host_glibc(),
            progress=progress,
            relaxable=DEFAULT_PINS,
        )
        digest = hashlib.sha256("\n".join(sorted(w.sha256 for w in house.wheels)).encode()).hexdigest()
        venv = self._environment(digest[:16], house.dir, house.requirements, progress)
        self._record_environment(env, digest, venv)
        return digest[:16], venv

    def _record_environment(self, env: ResolvedEnvironment, digest: str, venv: Path) -> None:
        """The environment image record of ``env``: its virtualenv, named by the digest of its wheels."""
        uri = f"process-env/{digest[:16]}"
        if self.associations is None or self.clock is None:
            return
        known = self.associations.get_environment_image(env.fingerprint)
        if known is not None and known.image_uri == uri:
            return
        size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
        self.associations.put_environment_image(
            EnvironmentImage(
                fingerprint=env.fingerprint,
                image_uri=uri,
                image_digest=f"sha256:{digest}",
                size_bytes=size,
                created_at=self.clock(),
            )
        )

    @staticmethod
    def _code(target: Path) -> tuple[Path, str]:
        """The runtime code as the image's ``/var/task`` holds it, and a digest of it."""
        code = target / "code"
        shutil.rmtree(code, ignore_errors=True)
        for rel, path in runtime_files():
            dest = code / "chalicelib" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        return code, runtime_code_digest()

    def _steps_image(self, env: ResolvedEnvironment, progress: Progress) -> str:
        """The shared steps process image: the steps' virtualenv and the runtime code, no model."""
        key, venv = self._venv(env, progress)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".steps-", dir=self.root))
        try:
            _, code_hash = self._code(staging)
            tag = hashlib.sha256(f"{key}\n{code_hash}".encode()).hexdigest()[:16]
            image_uri = f"modelport/steps:{tag}"
            target = self.root / image_key(image_uri)
            if (target / PROCESS_IMAGE_FILE).is_file():
                progress(f"steps process image {image_uri} exists: reused")
                return image_uri
            (staging / "model").mkdir()
            doc = {"python": str(venv / "bin" / "python"), "pythonpath": "code", "model_dir": "model",
                   "digest": f"sha256:{tag}"}  # fmt: skip
            (staging / PROCESS_IMAGE_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            try:
                staging.rename(target)
            except OSError:  # another build made it first
                if not (target / PROCESS_IMAGE_FILE).is_file():
                    raise
            progress(f"built steps process image {image_uri} (environment {key})")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return image_uri

    def _environment(
        self, key: str, wheelhouse: Path, requirements: tuple[str, ...], progress: Progress
    ) -> Path:
        """The virtualenv of one wheel set, made once (in a staging directory, then renamed into place)."""
        root = self.cache_dir / "process-envs"
        venv = root / key
        if (venv / ENV_MARKER).is_file():
            progress(f"process environment {key} exists: reused")
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            progress(f"creating process environment {key} ({len(requirements)} packages)")
            self._run([sys.executable, "-m", "venv", str(staging)], "create the virtualenv")
            self._run(
                [
                    str(staging / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--no-index",
                    "--find-links",
                    str(wheelhouse),
                    "--disable-pip-version-check",
                    "--quiet",
                    "-r",
                    str(wheelhouse / "requirements.txt"),
                ],
                "install the wheels",
            )
            (staging / ENV_MARKER).write_text("\n".join(requirements) + "\n", encoding="utf-8")
            staging.rename(venv)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if (venv / ENV_MARKER).is_file():  # another builder finished it first
                return venv
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # A renamed venv keeps working: python finds its prefix from pyvenv.cfg next to bin/.
        progress(f"process environment {key} is ready")
        return venv

    @staticmethod
    def _run(cmd: list[str], what: str) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise ImageError(f"could not {what} for the process environment: {tail}")
