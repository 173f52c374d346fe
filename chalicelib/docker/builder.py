"""The docker adapter of the ``ImageBuilder`` port: wheelhouse -> environment image -> model image -> push.

One environment image per resolved fingerprint (base image, python, architecture, exact wheels), shared by
every model with that environment and built only when the engine lacks it; then the model image on top:
runtime code, then the model directory, the last layer. Builds go through the engine's API with a tar
context made here (nothing from the host but what is put in it), host networking, and every stream chunk
checked for an error: the low-level API does not raise when a step fails.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import py_compile
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chalicelib.core.clock import utc_now
from chalicelib.core.config import REQUIREMENT
from chalicelib.core.config_file import ContainerAssociation, ModelConfigFile
from chalicelib.core.environment import AWS_BASE_IMAGE, PINS, ResolvedEnvironment, canonical_name
from chalicelib.core.errors import ArtifactError, ConfigError
from chalicelib.core.pipeline import stage_environments
from chalicelib.core.ports import AssociationStore, Clock, ImageBuilder, Progress, RepositoryHost
from chalicelib.core.records import EnvironmentImage
from chalicelib.docker import (
    BaseImageError,
    BuildError,
    EngineUnavailable,
    ImageError,
    PushError,
    _first_line,
    cache_root,
    docker_client,
)
from chalicelib.docker.baseimage import RELEASES, base_image_tag, build_base_image, image_exists
from chalicelib.docker.dockerfile import (
    CODE_CONTEXT,
    DEFAULT_PATH,
    MODEL_CONTEXT,
    SEED_PACKAGES,
    WHEELS_CONTEXT,
    Dockerfile,
    check_image,
    environment_dockerfile,
    environment_labels,
    model_dockerfile,
    model_labels,
    site_trims,
    steps_dockerfile,
)
from chalicelib.docker.wheelhouse import (
    REQUIREMENTS,
    Wheelhouse,
    parse_glibc,
    resolve_wheels,
    resolved_fingerprint,
)

# The runtime imports chalicelib.core (pydantic models; not its YAML): the versions of requirements.txt.
RUNTIME_PACKAGES: tuple[str, ...] = ("pydantic==2.13.4",)
DEFAULT_PINS = frozenset({*RUNTIME_PACKAGES, *(f"{name}=={version}" for name, version in PINS.items())})
"""Modelport's own pins: where one has no wheel for the target (numpy 2.4 on Amazon Linux 2's glibc 2.26),
the newest version that has one is taken (``resolve_wheels(relaxable=...)``). A user's pins never are."""
ENV_REPOSITORY = "modelport/env"
STEPS_REPOSITORY = "modelport-steps"
# glibc of the AWS Lambda Python base images: Amazon Linux 2 (3.11) and Amazon Linux 2023 (3.12, 3.13).
AWS_GLIBC: dict[str, tuple[int, int]] = {"3.11": (2, 26), "3.12": (2, 34), "3.13": (2, 34)}
_AWS_BASE = re.compile(
    r"public\.ecr\.aws/lambda/python:(3\.\d+)(?:[.-][A-Za-z0-9._-]*)?(?:@sha256:[a-f0-9]{64})?"
)
ENGINE_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}
REGISTRY_HOST = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?(?:/[a-z0-9._-]+)*$")
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
CONTEXT_MTIME = 315532800  # 1980-01-01: fixed, so an unchanged file makes an identical layer
CHALICELIB = Path(__file__).resolve().parents[1]
RUNTIME_CODE = ("__init__.py", "py.typed", "core", "runtime")


@dataclass(frozen=True)
class BaseChoice:
    image: str
    image_id: str
    python: str
    glibc: tuple[int, int]
    path: str
    note: str | None = None


@dataclass(frozen=True)
class _EnvironmentImage:
    tag: str
    info: dict[str, Any]
    built: bool
    wheels: int


@dataclass(frozen=True)
class BuildReport:
    """What ``build`` made; the port returns only ``association``, the CLI shows the rest."""

    association: ContainerAssociation
    image_id: str
    layers: int
    environment_image: str
    environment_built: bool
    environment_size_bytes: int
    base_image: str
    base_note: str | None
    wheels: int
    pushed: bool
    timings: dict[str, float] = field(default_factory=dict)


class DockerImageBuilder:
    """Builds model images with a docker engine; ``registry`` (host[:port], an ECR host or ``ecr``) pushes,
    through ``repositories`` (the ECR adapter: repositories made, a login per push) when it is ECR.

    ``base_image`` (or ``$MODELPORT_BASE_IMAGE``) overrides the manifest's base. When the base is the AWS
    default and no registry gives it, the local Debian base of the same python is used (and built if
    missing), and the progress says so.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        registry: str | None = None,
        base_image: str | None = None,
        cache_dir: Path | None = None,
        associations: AssociationStore | None = None,
        clock: Clock = utc_now,
        repositories: RepositoryHost | None = None,
        compile_code: bool = True,
    ) -> None:
        """``associations``: where the environment images built are recorded (this builder knows their
        size and digest)."""
        self.client = client if client is not None else docker_client()
        self.registry = registry.rstrip("/") if registry else None
        if self.registry not in (None, "ecr") and not REGISTRY_HOST.fullmatch(self.registry or ""):
            raise ConfigError(f"{registry!r} is not a registry like 127.0.0.1:5000", path="registry")
        if self.registry == "ecr" and repositories is None:
            raise ConfigError("registry ecr needs the ECR adapter (wiring.repository_host)", path="registry")
        override = base_image or os.environ.get("MODELPORT_BASE_IMAGE") or None
        self.base_override = check_image(override) if override else None
        self.cache_dir = cache_dir if cache_dir is not None else cache_root()
        self.associations = associations
        self.clock = clock
        self.repositories = repositories if self.registry is not None else None
        self.compile_code = compile_code
        self._unreachable: set[str] = set()
        self._probed: dict[str, tuple[str, tuple[int, int]]] = {}

    # ------------------------------------------------------------------ the port

    def build(self, manifest: ModelConfigFile, bundle_dir: Path, progress: Progress) -> ContainerAssociation:
        return self.build_image(manifest, bundle_dir, progress).association

    def build_image(self, manifest: ModelConfigFile, bundle_dir: Path, progress: Progress) -> BuildReport:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        env = manifest.environment
        model_env, steps_env = stage_environments(manifest)
        self._check_architecture(env.architecture)
        base = self._choose_base(env, progress)
        timings["base_s"] = time.perf_counter() - started
        if steps_env is not None:
            progress("chained pipeline: the model image without the step packages, pre/post on a steps image")

        t = time.perf_counter()
        environment = self._environment(model_env, base, progress)
        timings["environment_s"] = time.perf_counter() - t

        t = time.perf_counter()
        repository, auth = self._repository(f"modelport-{manifest.name}", progress)
        tag = f"v{manifest.version}"
        image_ref = f"{repository}:{tag}"
        image_id = self._build_model(manifest, bundle_dir, environment.tag, image_ref, progress)
        info = self.client.api.inspect_image(image_id)
        layers = len(info.get("RootFS", {}).get("Layers", []))
        timings["model_s"] = time.perf_counter() - t

        digest = image_id
        pushed = False
        if self.registry is not None:
            t = time.perf_counter()
            digest = self._push(repository, tag, auth, progress)
            pushed = True
            timings["push_s"] = time.perf_counter() - t
        steps_image = None
        if steps_env is not None:
            t = time.perf_counter()
            steps_image = self._steps_image(steps_env, base, progress)
            timings["steps_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - started
        association = ContainerAssociation(
            environment_image=environment.tag,
            image_uri=image_ref,
            image_digest=digest,
            size_bytes=int(info["Size"]),
            steps_image=steps_image,
        )
        progress(f"built {image_ref} ({info['Size'] / 1e6:.0f} MB, {layers} layers)")
        return BuildReport(
            association=association,
            image_id=image_id,
            layers=layers,
            environment_image=environment.tag,
            environment_built=environment.built,
            environment_size_bytes=int(environment.info["Size"]),
            base_image=base.image,
            base_note=base.note,
            wheels=environment.wheels,
            pushed=pushed,
            timings=timings,
        )

    def probe_image(self, env: ResolvedEnvironment, progress: Progress = lambda _: None) -> str:
        """The image the sandboxed probe runs in: ``env``'s environment image + the runtime code (the
        steps image of ``env``, pushed where model images go), built once per environment and Modelport."""
        self._check_architecture(env.architecture)
        return self._steps_image(env, self._choose_base(env, progress), progress)

    def _environment(
        self, env: ResolvedEnvironment, base: BaseChoice, progress: Progress
    ) -> _EnvironmentImage:
        """The environment image of ``env`` on ``base``: found by its resolved fingerprint, else built."""
        packages = self.packages_of(env)
        house = resolve_wheels(
            packages,
            python=env.python,
            architecture=env.architecture,
            cache_dir=self.cache_dir,
            glibc=base.glibc,
            progress=progress,
            relaxable=DEFAULT_PINS,
        )
        recipe = self._environment_recipe(house, base)
        fingerprint = resolved_fingerprint(
            env.fingerprint,
            house.wheels,
            base_image=base.image_id,
            recipe=recipe({"dev.modelport.recipe": "1"}).render(),
        )
        env_tag = f"{ENV_REPOSITORY}:{fingerprint.removeprefix('sha256:')[:16]}"
        built = not image_exists(self.client, env_tag)
        if built:
            progress(f"building environment image {env_tag} on {base.image}")
            labels = environment_labels(
                env, fingerprint=fingerprint, base_image=base.image, packages=packages
            )
            self._build_environment(recipe(labels), house, env_tag, progress)
        else:
            progress(f"environment image {env_tag} exists: reused")
        info = self.client.api.inspect_image(env_tag)
        self._record_environment(env, env_tag, info)
        return _EnvironmentImage(env_tag, info, built, len(house.wheels))

    def _steps_image(self, env: ResolvedEnvironment, base: BaseChoice, progress: Progress) -> str:
        """The shared steps image: the steps' environment + the runtime code, no model. Its tag is a digest
        of both, so every model with these steps (and this Modelport) names the same image."""
        environment = self._environment(env, base, progress)
        tag = hashlib.sha256(f"{environment.tag}\n{runtime_code_digest()}".encode()).hexdigest()[:16]
        repository, auth = self._repository(STEPS_REPOSITORY, progress)
        ref = f"{repository}:{tag}"
        if image_exists(self.client, ref):
            progress(f"steps image {ref} exists: reused")
            return ref
        labels = {"dev.modelport.steps": "1", "dev.modelport.environment-image": environment.tag}
        dockerfile = steps_dockerfile(environment_image=environment.tag, labels=labels)
        compile_for = env.python if self.compile_code else None
        with (
            tempfile.TemporaryDirectory(prefix="modelport-steps-") as tmp,
            tempfile.TemporaryFile() as context,
        ):
            with _context_tar(context, level=6) as tar:
                _add_bytes(tar, "Dockerfile", dockerfile.render().encode())
                _add_runtime_code(tar, Path(tmp) / "pyc", compile_for)
            context.seek(0)
            progress(f"building steps image {ref} on {environment.tag}")
            self.run_build(context, ref, progress, what="steps")
        if self.registry is not None:
            self._push(repository, tag, auth, progress)
        return ref

    # ------------------------------------------------------------------ environment

    @classmethod
    def packages(cls, manifest: ModelConfigFile) -> tuple[str, ...]:
        return cls.packages_of(manifest.environment)

    @staticmethod
    def packages_of(env: ResolvedEnvironment) -> tuple[str, ...]:
        """The environment's packages plus what the runtime imports (unless the user pinned those too)."""
        for requirement in env.packages:
            if not isinstance(requirement, str) or not REQUIREMENT.fullmatch(requirement):
                raise ConfigError(
                    f"{requirement!r} is not a package requirement", path="environment.packages"
                )
        chosen = {canonical_name(p): p for p in RUNTIME_PACKAGES}
        chosen.update({canonical_name(p): p for p in env.packages})
        return tuple(chosen[name] for name in sorted(chosen))

    def _check_architecture(self, architecture: str) -> None:
        try:
            engine = str(self.client.api.version().get("Arch", ""))
        except Exception as exc:  # requests/docker transport errors: the engine went away
            raise EngineUnavailable(f"the docker engine does not answer: {_first_line(exc)}") from None
        if ENGINE_ARCH.get(engine, engine) != architecture:
            raise ImageError(
                f"this docker engine builds {ENGINE_ARCH.get(engine, engine)} images, the model needs "
                f"{architecture}",
                hint="build on a machine (or engine) of that architecture",
            )

    def _choose_base(self, env: ResolvedEnvironment, progress: Progress) -> BaseChoice:
        python = env.python
        note = None
        if self.base_override is not None:
            image = self.base_override
            if not self._available(image, progress):
                raise BaseImageError(f"base image {image} is neither in the engine nor pullable")
        else:
            image = check_image(env.base_image)
            aws_default = AWS_BASE_IMAGE.format(python=python)
            if not self._available(image, progress):
                if image != aws_default:
                    raise BaseImageError(
                        f"base image {image} is neither in the engine nor pullable",
                        hint="pull or build it first, or pass another with --base-image",
                    )
                if python not in RELEASES:
                    raise BaseImageError(
                        f"no registry gives {image} and no Debian release ships python {python} for a "
                        "local base",
                        hint="use python 3.11 or 3.13, or pass a python base with --base-image",
                    )
                local = base_image_tag(python)
                if not image_exists(self.client, local):
                    progress(f"no registry gives {image}: building the local base {local}")
                    build_base_image(python, progress=progress, client=self.client)
                note = f"using local base {local} instead of {image} (no registry reachable)"
                progress(note)
                image = local
        info = self.client.api.inspect_image(image)
        found_python, glibc = self._base_runtime(image, info)
        minor = ".".join(found_python.split(".")[:2])
        if minor != python:
            raise BaseImageError(
                f"base image {image} has python {found_python}, the model's environment needs {python}",
                hint="pick a base of that python with --base-image, or change environment.python",
            )
        image_env = dict(_split_env(info.get("Config", {}).get("Env") or []))
        return BaseChoice(
            image=image,
            image_id=str(info["Id"]),
            python=found_python,
            glibc=glibc,
            path=image_env.get("PATH", DEFAULT_PATH),
            note=note,
        )

    def _available(self, image: str, progress: Progress) -> bool:
        if image_exists(self.client, image):
            return True
        if image in self._unreachable:
            return False
        import docker  # type: ignore[import-untyped]

        repository, tag = _split_tag(image)
        progress(f"pulling {image}")
        try:
            for chunk in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk or "errorDetail" in chunk:
                    raise docker.errors.APIError(_chunk_error(chunk))
        except (docker.errors.DockerException, OSError) as exc:
            progress(f"cannot pull {image}: {_first_line(exc)}")
            self._unreachable.add(image)
            return False
        return image_exists(self.client, image)

    def _base_runtime(self, image: str, info: dict[str, Any]) -> tuple[str, tuple[int, int]]:
        """(python version, glibc) of a base: its Modelport labels, else a one-off probe container."""
        labels = info.get("Config", {}).get("Labels") or {}
        if "dev.modelport.base.python" in labels and "dev.modelport.base.glibc" in labels:
            return str(labels["dev.modelport.base.python"]), parse_glibc(labels["dev.modelport.base.glibc"])
        aws = _AWS_BASE.fullmatch(image)
        if aws is not None and aws.group(1) in AWS_GLIBC:  # Amazon Linux: known, no need to run it
            return aws.group(1), AWS_GLIBC[aws.group(1)]
        image_id = str(info["Id"])
        if image_id in self._probed:
            return self._probed[image_id]
        probe_file = self.cache_dir / "bases" / f"{image_id.removeprefix('sha256:')}.json"
        try:
            data = json.loads(probe_file.read_text())
            found = (str(data["python"]), parse_glibc(str(data["glibc"])))
        except (OSError, ValueError, KeyError):
            found = self._probe(image)
            probe_file.parent.mkdir(parents=True, exist_ok=True)
            probe_file.write_text(json.dumps({"python": found[0], "glibc": f"{found[1][0]}.{found[1][1]}"}))
        self._probed[image_id] = found
        return found

    def _probe(self, image: str) -> tuple[str, tuple[int, int]]:
        code = "import platform, json; print(json.dumps([platform.python_version(), platform.libc_ver()[1]]))"
        try:
            out = self.client.containers.run(
                image, entrypoint=["python3", "-c", code], network_mode="none", remove=True, user="0"
            )
            version, glibc = json.loads(out.decode().strip().splitlines()[-1])
            return str(version), parse_glibc(str(glibc))
        except Exception as exc:  # no python3 in it, not glibc (musl), not runnable: not a usable base
            raise BaseImageError(
                f"base image {image} does not run python3 on glibc: {_first_line(exc)}",
                hint="use a Debian/Ubuntu/Amazon Linux python image",
            ) from None

    @staticmethod
    def _environment_recipe(house: Wheelhouse, base: BaseChoice) -> Callable[[Mapping[str, str]], Dockerfile]:
        """The environment Dockerfile for given labels; rendered without them it is part of the fingerprint,
        so a change in how Modelport builds environments makes new environment images."""
        installed = {canonical_name(w.name.split("-", 1)[0]) for w in house.wheels}

        def recipe(labels: Mapping[str, str]) -> Dockerfile:
            return environment_dockerfile(
                base_image=base.image,
                labels=labels,
                base_path=base.path,
                remove=[p for p in SEED_PACKAGES if p not in installed],
                trim=site_trims(installed),
            )

        return recipe

    def _build_environment(
        self, dockerfile: Dockerfile, house: Wheelhouse, tag: str, progress: Progress
    ) -> None:
        with tempfile.TemporaryFile() as context:
            with _context_tar(context, level=1) as tar:
                _add_bytes(tar, "Dockerfile", dockerfile.render().encode())
                _add_dir(tar, WHEELS_CONTEXT)
                for wheel in house.wheels:
                    _add_file(tar, f"{WHEELS_CONTEXT}/{wheel.name}", house.dir / wheel.name)
                _add_file(tar, f"{WHEELS_CONTEXT}/{REQUIREMENTS}", house.dir / REQUIREMENTS)
            context.seek(0)
            self.run_build(context, tag, progress, what="environment")

    def _record_environment(self, env: ResolvedEnvironment, tag: str, info: dict[str, Any]) -> None:
        record_environment(
            self.associations, env, EnvironmentImage(
                fingerprint=env.fingerprint, image_uri=tag, image_digest=str(info["Id"]),
                size_bytes=int(info["Size"]), created_at=self.clock(),
            ),
        )  # fmt: skip

    # ------------------------------------------------------------------ model image

    def _build_model(
        self, manifest: ModelConfigFile, bundle_dir: Path, env_tag: str, image_ref: str, progress: Progress
    ) -> str:
        labels = model_labels(manifest, environment_image=env_tag)
        dockerfile = model_dockerfile(environment_image=env_tag, labels=labels)
        compile_for = manifest.environment.python if self.compile_code else None
        with (
            tempfile.TemporaryDirectory(prefix="modelport-model-") as tmp,
            tempfile.TemporaryFile() as context,
        ):
            model_dir = Path(tmp) / "model"
            _prepare_model(bundle_dir, manifest, model_dir)
            with _context_tar(context, level=6) as tar:
                _add_bytes(tar, "Dockerfile", dockerfile.render().encode())
                _add_runtime_code(tar, Path(tmp) / "pyc", compile_for)
                _add_tree(tar, model_dir, MODEL_CONTEXT)
            context.seek(0)
            progress(f"building model image {image_ref} on {env_tag}")
            return self.run_build(context, image_ref, progress, what="model")

    def run_build(self, context: IO[bytes], tag: str, progress: Progress, *, what: str) -> str:
        """Run one build, forwarding its output; raise BuildError with the failing step's last lines.

        The last image of every earlier stage (the multi-stage ``build`` stage, with the wheels in it) is
        removed afterwards: it is only a cache for rebuilding the same environment, which never happens.
        """
        import docker

        step = "the start"
        tail: list[str] = []
        image_id: str | None = None
        current: str | None = None
        stage_ends: list[str] = []
        try:
            stream = self.client.api.build(
                fileobj=context,
                custom_context=True,
                encoding="gzip",
                tag=tag,
                network_mode="host",
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    last = " | ".join(tail[-5:])
                    raise BuildError(
                        f"building {what} image {tag} failed at {step}: {_chunk_error(chunk)}"
                        + (f" (last output: {last[-800:]})" if last else "")
                    )
                for line in _lines(chunk.get("stream", "")):
                    found = STEP.match(line)
                    if found:
                        step, tail = _short(line), []
                        if found.group(3).startswith("FROM ") and current is not None:
                            stage_ends.append(current)
                    else:
                        tail = [*tail[-19:], line]
                        layer = _LAYER.match(line)
                        if layer:
                            current = layer.group(1)
                    progress(f"{what}: {line}")
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
        except docker.errors.DockerException as exc:
            raise BuildError(f"building {what} image {tag} failed: {_first_line(exc)}") from None
        if image_id is None:
            raise BuildError(f"building {what} image {tag} ended without an image")
        for stage in stage_ends:
            with contextlib.suppress(docker.errors.DockerException):
                self.client.api.remove_image(stage)
        return image_id

    # ------------------------------------------------------------------ registry

    def _repository(self, name: str, progress: Progress) -> tuple[str, dict[str, str] | None]:
        """The repository to tag an image ``modelport-<what>`` with, and the push credentials (ECR) if any."""
        if self.registry is None:
            return f"modelport/{name.removeprefix('modelport-')}", None
        if self.repositories is None:
            return f"{self.registry}/{name}", None
        uri = self.repositories.ensure_repository(name)
        auth = self.repositories.authorization()
        progress(f"ECR repository {uri}")
        return uri, auth.auth_config()

    def _push(self, repository: str, tag: str, auth: dict[str, str] | None, progress: Progress) -> str:
        import docker

        digest: str | None = None
        progress(f"pushing {repository}:{tag}")
        try:
            stream = self.client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    raise PushError(f"pushing {repository}:{tag} failed: {_chunk_error(chunk)}")
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "Digest" in aux:
                    digest = str(aux["Digest"])
                status = chunk.get("status", "")
                if status in ("Pushed", "Layer already exists") or status.startswith("Mounted from"):
                    progress(f"push: {chunk.get('id', '')}: {status}")
        except docker.errors.DockerException as exc:
            raise PushError(f"pushing {repository}:{tag} failed: {_first_line(exc)}") from None
        if digest is None:
            raise PushError(f"pushing {repository}:{tag} ended without a digest")
        progress(f"pushed {repository}:{tag}@{digest}")
        return digest


# --------------------------------------------------------------------------- build contexts


@contextmanager
def _context_tar(fileobj: IO[bytes], *, level: int) -> Iterator[tarfile.TarFile]:
    """A gzip-compressed tar written to ``fileobj``, complete when the block ends."""
    with (
        gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=level, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        yield tar


def _info(name: str, *, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = CONTEXT_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, kind=tarfile.REGTYPE, mode=0o644, size=len(data)), io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_info(name, kind=tarfile.DIRTYPE, mode=0o755))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    mode = 0o755 if os.access(path, os.X_OK) else 0o644
    with path.open("rb") as fh:
        tar.addfile(_info(name, kind=tarfile.REGTYPE, mode=mode, size=path.stat().st_size), fh)


def _add_tree(tar: tarfile.TarFile, root: Path, prefix: str) -> None:
    """Directories and regular files under ``root``, sorted, as ``prefix/...``; links are refused."""
    _add_dir(tar, prefix)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ArtifactError(f"{rel} is a symbolic link; the model directory must hold plain files")
        if path.is_dir():
            _add_dir(tar, f"{prefix}/{rel}")
        elif path.is_file():
            _add_file(tar, f"{prefix}/{rel}", path)


def runtime_code_digest() -> str:
    """sha256 over the runtime code's paths and bytes: what names a steps image (docker or process)."""
    digest = hashlib.sha256()
    for rel, path in runtime_files():
        digest.update(rel.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def runtime_files() -> Iterator[tuple[str, Path]]:
    """chalicelib's files the runtime needs (``__init__``, ``py.typed``, ``core/``, ``runtime/``)."""
    for top in RUNTIME_CODE:
        path = CHALICELIB / top
        if path.is_file():
            yield top, path
            continue
        for found in sorted(path.rglob("*")):
            rel = found.relative_to(CHALICELIB)
            if "__pycache__" in rel.parts or found.suffix == ".pyc" or not found.is_file():
                continue
            yield rel.as_posix(), found


def _add_runtime_code(tar: tarfile.TarFile, scratch: Path, python: str | None) -> None:
    """chalicelib's ``__init__``, ``py.typed``, ``core/`` and ``runtime/`` as ``code/``.

    With ``python`` equal to this interpreter's version, each module is compiled here into a hash-checked
    ``.pyc`` (valid whatever the files' times), so the read-only container never compiles them at start.
    """
    compile_here = python is not None and python == f"{sys.version_info[0]}.{sys.version_info[1]}"
    files = list(runtime_files())
    dirs = sorted({str(Path(rel).parent) for rel, _ in files} - {"."})
    if compile_here:
        dirs = sorted({*dirs, *(f"{d}/__pycache__" for d in dirs), "__pycache__"})
    _add_dir(tar, CODE_CONTEXT)
    for d in dirs:
        _add_dir(tar, f"{CODE_CONTEXT}/{d}")
    for rel, path in files:
        _add_file(tar, f"{CODE_CONTEXT}/{rel}", path)
        if compile_here and path.suffix == ".py":
            cached = Path(rel).parent / "__pycache__" / f"{path.stem}.{sys.implementation.cache_tag}.pyc"
            target = scratch / cached
            target.parent.mkdir(parents=True, exist_ok=True)
            py_compile.compile(
                str(path),
                cfile=str(target),
                dfile=f"/var/task/chalicelib/{rel}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
            _add_file(tar, f"{CODE_CONTEXT}/{cached.as_posix()}", target)


def _prepare_model(bundle_dir: Path, manifest: ModelConfigFile, dest: Path) -> None:
    from chalicelib.runtime.layout import LayoutError, prepare_model_dir

    try:
        prepare_model_dir(bundle_dir, manifest, dest)
    except LayoutError as exc:
        raise ArtifactError(str(exc)) from None


# --------------------------------------------------------------------------- stream helpers


def _lines(text: str) -> Iterable[str]:
    for line in text.splitlines():
        line = _ANSI.sub("", line).rstrip()
        if line:
            yield line


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LAYER = re.compile(r"^ ?---> ([0-9a-f]{12,64})$")


def _short(step: str, limit: int = 100) -> str:
    return step if len(step) <= limit else step[: limit - 3] + "..."


def _chunk_error(chunk: dict[str, Any]) -> str:
    detail = chunk.get("errorDetail")
    message = detail.get("message") if isinstance(detail, dict) else None
    text = str(message or chunk.get("error") or "unknown error")
    return " ".join(text.split())


def _split_tag(image: str) -> tuple[str, str | None]:
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, digest
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, "latest"


def _split_env(env: list[str]) -> Iterator[tuple[str, str]]:
    for item in env:
        key, _, value = item.partition("=")
        yield key, value


def _implements_the_port(builder: DockerImageBuilder) -> ImageBuilder:
    return builder  # mypy checks DockerImageBuilder against the ImageBuilder port here


def record_environment(
    associations: AssociationStore | None, env: ResolvedEnvironment, image: EnvironmentImage
) -> None:
    """Associate ``env``'s fingerprint with its environment image, unless it already names this one."""
    if associations is None:
        return
    known = associations.get_environment_image(env.fingerprint)
    if known is not None and known.image_uri == image.image_uri and known.image_digest == image.image_digest:
        return
    associations.put_environment_image(image)
