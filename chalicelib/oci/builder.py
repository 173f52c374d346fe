"""``OciImageBuilder``: the ``ImageBuilder`` port with no docker engine, only Python and the registry API.

An image is the base's layers (fetched once from the base's registry, reused by digest: mounted within one
registry, copied across) + the environment layer (the wheelhouse unpacked into ``/opt/env``; cached on disk
by its resolved fingerprint, one per environment, shared by every model with it) + the runtime-code layer +
the model layer (model files and ``model-config.json``, the last: a new model version is one new layer).
Every layer is deterministic (``layers.py``) and the image config carries no time, so the same inputs give
the same digest on any machine. The config matches what ``docker/dockerfile.py`` gives the docker builder:
the same PATH and environment, entry point, command, user and labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import py_compile
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.core.clock import utc_now
from chalicelib.core.config_file import ContainerAssociation, ModelConfigFile
from chalicelib.core.environment import AWS_BASE_IMAGE, ResolvedEnvironment
from chalicelib.core.errors import ConfigError
from chalicelib.core.pipeline import stage_environments
from chalicelib.core.ports import AssociationStore, Clock, Progress, RepositoryHost, WheelCache
from chalicelib.core.records import EnvironmentImage
from chalicelib.docker import BaseImageError, PushError, cache_root
from chalicelib.docker.baseimage import RELEASES, base_image_tag
from chalicelib.docker.builder import (
    DEFAULT_PINS,
    REGISTRY_HOST,
    DockerImageBuilder,
    record_environment,
    runtime_files,
)
from chalicelib.docker.dockerfile import (
    DEFAULT_PATH,
    ENTRYPOINT,
    HANDLER,
    RUNTIME_ENV,
    RUNTIME_UID,
    VENV,
    model_labels,
)
from chalicelib.docker.wheelhouse import Wheelhouse, parse_glibc, resolve_wheels, resolved_fingerprint
from chalicelib.oci import CONFIG_V1, LAYER_GZIP, MANIFEST_LIST_V2, MANIFEST_V2, OCI_INDEX
from chalicelib.oci.layers import Entry, Layer, tree_entries, write_layer
from chalicelib.oci.registry import RegistryClient, parse_reference
from chalicelib.oci.venv import install_wheels

RECIPE = "oci-env-3"
"""Part of every environment layer's identity: a change in how layers are made makes new ones."""
ARCH = {"x86_64": "amd64", "arm64": "arm64"}
AWS_GLIBC: dict[str, tuple[int, int]] = {"3.11": (2, 26), "3.12": (2, 34), "3.13": (2, 34)}
_AWS_BASE = re.compile(r"public\.ecr\.aws/lambda/python:(3\.\d+)")


@dataclass(frozen=True)
class Base:
    """A base image as the registry holds it: where, its layers, its config, its python."""

    reference: str
    client: RegistryClient
    repository: str
    layers: tuple[dict[str, Any], ...]
    config: dict[str, Any]
    python: str
    python_home: str
    glibc: tuple[int, int]


@dataclass(frozen=True)
class OciBuildReport:
    association: ContainerAssociation
    reference: str
    layers: int
    uploaded: tuple[str, ...]
    environment_built: bool
    base_image: str
    wheels: int
    timings: dict[str, float] = field(default_factory=dict)


class OciImageBuilder:
    """Builds and pushes model images to ``registry`` (host[:port], an ECR host, or ``ecr`` with
    ``repositories``); ``base_image`` (or ``$MODELPORT_BASE_IMAGE``) overrides the config's base."""

    def __init__(
        self,
        registry: str,
        *,
        repositories: RepositoryHost | None = None,
        base_image: str | None = None,
        cache_dir: Path | None = None,
        associations: AssociationStore | None = None,
        clock: Clock = utc_now,
        wheel_cache: WheelCache | None = None,
        scratch: Path | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """``credentials``: (user, password) for a registry with basic or token auth that is not ECR."""
        self.credentials = credentials
        self.registry = (registry or "").rstrip("/")
        if self.registry != "ecr" and not REGISTRY_HOST.fullmatch(self.registry):
            raise ConfigError(f"{registry!r} is not a registry like 127.0.0.1:5000", path="registry")
        if self.registry == "ecr" and repositories is None:
            raise ConfigError("registry ecr needs the ECR adapter (wiring.repository_host)", path="registry")
        self.repositories = repositories
        self.base_override = base_image or os.environ.get("MODELPORT_BASE_IMAGE") or None
        self.cache_dir = cache_dir if cache_dir is not None else cache_root()
        self.associations = associations
        self.clock = clock
        self.wheel_cache = wheel_cache
        self.scratch = scratch
        self._clients: dict[str, RegistryClient] = {}

    # ------------------------------------------------------------------ the port

    def build(self, manifest: ModelConfigFile, bundle_dir: Path, progress: Progress) -> ContainerAssociation:
        return self.build_image(manifest, bundle_dir, progress).association

    def build_image(self, manifest: ModelConfigFile, bundle_dir: Path, progress: Progress) -> OciBuildReport:
        from chalicelib.docker.builder import _prepare_model

        started = time.perf_counter()
        model_env, steps_env = stage_environments(manifest)
        base = self._base(model_env, progress)
        with tempfile.TemporaryDirectory(prefix="modelport-oci-", dir=self.scratch) as tmp:
            work = Path(tmp)
            env_layer, built, wheels = self._environment_layer(model_env, base, progress)
            code = self._code_layer(model_env.python, work, progress)
            model_dir = work / "model"
            _prepare_model(bundle_dir, manifest, model_dir)
            model = write_layer(tree_entries(model_dir, "var/task/model"), work / "model.tar.gz")
            labels = model_labels(manifest, environment_image=self._env_ref(env_layer))
            config = _config(
                base, [env_layer, code, model], labels, _runtime_env(base), list(ENTRYPOINT), [HANDLER]
            )
            repository = self._repository(f"modelport-{manifest.name}", progress)
            digest, uploaded = self._push(
                base, repository, [env_layer, code, model], config, f"v{manifest.version}", progress
            )
            steps_image = None
            if steps_env is not None:
                progress(
                    "chained pipeline: the model image without the step packages, pre/post on a steps image"
                )
                steps_image = self._steps_image(steps_env, progress)
        host_repo = f"{self._client_host()}/{repository}"
        association = ContainerAssociation(
            environment_image=self._env_ref(env_layer),
            image_uri=f"{host_repo}:v{manifest.version}",
            image_digest=digest,
            size_bytes=sum(int(d["size"]) for d in base.layers) + env_layer.size + code.size + model.size,
            steps_image=steps_image,
        )
        record_environment(
            self.associations, model_env, EnvironmentImage(
                fingerprint=model_env.fingerprint, image_uri=association.environment_image,
                image_digest=env_layer.digest, size_bytes=env_layer.size, created_at=self.clock(),
            ),
        )  # fmt: skip
        progress(f"pushed {host_repo}@{digest} ({len(uploaded)} blobs uploaded)")
        return OciBuildReport(
            association=association,
            reference=f"{host_repo}@{digest}",
            layers=len(base.layers) + 3,
            uploaded=tuple(uploaded),
            environment_built=built,
            base_image=base.reference,
            wheels=wheels,
            timings={"total_s": time.perf_counter() - started},
        )

    def probe_image(self, env: ResolvedEnvironment, progress: Progress = lambda _: None) -> str:
        """The image the sandboxed probe runs in: ``env``'s environment + the runtime code (a steps image)."""
        return self._steps_image(env, progress)

    def build_service_image(
        self,
        repository: str,
        *,
        packages: Sequence[str],
        python: str,
        architecture: str,
        code: Sequence[tuple[str, Path]],
        handler: str,
        env: Mapping[str, str],
        progress: Progress,
    ) -> str:
        """An image of Modelport's own (the deploy worker): base + ``packages`` + ``code`` under /var/task."""
        from chalicelib.core.environment import fingerprint

        base_image = AWS_BASE_IMAGE.format(python=python)
        pins = tuple(sorted(packages))
        resolved = ResolvedEnvironment(
            python=python,
            architecture=architecture,
            memory_mb=2048,
            timeout_s=900,
            base_image=base_image,
            packages=pins,
            fingerprint=fingerprint(
                base_image=base_image, python=python, architecture=architecture, packages=pins
            ),
        )
        base = self._base(resolved, progress)
        with tempfile.TemporaryDirectory(prefix="modelport-oci-", dir=self.scratch) as tmp:
            env_layer, _, _ = self._environment_layer(resolved, base, progress, extra=False)
            entries = [Entry(f"var/task/{rel}", source=path) for rel, path in code]
            code_layer = write_layer(entries, Path(tmp) / "code.tar.gz")
            runtime_env = {**_runtime_env(base), **env}
            config = _config(
                base,
                [env_layer, code_layer],
                {"dev.modelport.service": repository},
                runtime_env,
                list(ENTRYPOINT),
                [handler],
            )
            repo = self._repository(repository, progress)
            digest, _ = self._push(base, repo, [env_layer, code_layer], config, "latest", progress)
        return f"{self._client_host()}/{repo}@{digest}"

    # ------------------------------------------------------------------ base

    def _client(self, host: str) -> RegistryClient:
        if host not in self._clients:
            username, password = self.credentials or (None, None)
            if self.repositories is not None and host == self._client_host():
                auth = self.repositories.authorization().auth_config()
                username, password = auth.get("username"), auth.get("password")
            self._clients[host] = RegistryClient(host, username=username, password=password)
        return self._clients[host]

    def _client_host(self) -> str:
        if self.registry != "ecr":
            return self.registry
        assert self.repositories is not None
        return self.repositories.ensure_repository("modelport-env").split("/", 1)[0]

    def _base(self, env: ResolvedEnvironment, progress: Progress) -> Base:
        wanted = self.base_override or env.base_image or AWS_BASE_IMAGE.format(python=env.python)
        candidates = [wanted]
        aws_default = AWS_BASE_IMAGE.format(python=env.python)
        if self.base_override is None and wanted == aws_default and env.python in RELEASES:
            candidates.append(f"{self._client_host()}/{base_image_tag(env.python)}")
        errors = []
        for candidate in candidates:
            try:
                base = self._fetch_base(candidate, env)
            except PushError as exc:
                errors.append(f"{candidate}: {exc}")
                continue
            if candidate != wanted:
                progress(f"using local base {candidate} instead of {wanted} (no registry gives it)")
            if base.python != env.python:
                raise BaseImageError(
                    f"base image {candidate} has python {base.python}, the model's environment needs "
                    f"{env.python}"
                )
            return base
        raise BaseImageError(
            "no base image can be fetched: " + "; ".join(errors)[:600],
            hint=f"put the local base into the registry: modelport base-image push {self._client_host()}",
        )

    def _fetch_base(self, reference: str, env: ResolvedEnvironment) -> Base:
        ref = parse_reference(reference)
        client = self._client(ref.host)
        data, media_type, _ = client.get_manifest(ref.repository, ref.reference)
        doc = json.loads(data)
        if media_type in (MANIFEST_LIST_V2, OCI_INDEX) or "manifests" in doc:
            arch = ARCH.get(env.architecture, env.architecture)
            chosen = [
                m
                for m in doc.get("manifests", [])
                if m.get("platform", {}).get("architecture") == arch
                and m.get("platform", {}).get("os") == "linux"
            ]
            if not chosen:
                raise PushError(f"{reference} has no linux/{arch} image")
            data, media_type, _ = client.get_manifest(ref.repository, chosen[0]["digest"])
            doc = json.loads(data)
        config = json.loads(client.get_blob_bytes(ref.repository, doc["config"]["digest"]))
        labels = config.get("config", {}).get("Labels") or {}
        aws = _AWS_BASE.match(reference)
        if "dev.modelport.base.python" in labels:
            version = str(labels["dev.modelport.base.python"])
            glibc = parse_glibc(str(labels.get("dev.modelport.base.glibc", "2.17")))
            home = "/usr/bin"
        elif aws is not None and aws.group(1) in AWS_GLIBC:
            version, glibc, home = aws.group(1), AWS_GLIBC[aws.group(1)], "/var/lang/bin"
        else:
            raise BaseImageError(
                f"base image {reference} does not say its python and glibc (labels "
                "dev.modelport.base.python/.glibc)"
            )
        return Base(
            reference=reference,
            client=client,
            repository=ref.repository,
            layers=tuple(doc["layers"]),
            config=config,
            python=".".join(version.split(".")[:2]),
            python_home=home,
            glibc=glibc,
        )

    # ------------------------------------------------------------------ layers

    def _environment_layer(
        self, env: ResolvedEnvironment, base: Base, progress: Progress, *, extra: bool = True
    ) -> tuple[Layer, bool, int]:
        """The environment's layer, from the disk cache by its resolved fingerprint, else made."""
        house = self._wheelhouse(env, base, progress, extra=extra)
        base_id = base.config.get("rootfs", {}).get("diff_ids", [])
        fingerprint = resolved_fingerprint(
            env.fingerprint, house.wheels, base_image=json.dumps(base_id), recipe=RECIPE
        )
        key = fingerprint.removeprefix("sha256:")[:32]
        cached = self.cache_dir / "oci" / "layers" / f"env-{key}"
        found = _load_layer(cached)
        if found is not None:
            progress(f"environment layer {found.digest[:19]} (cached, {found.size / 1e6:.0f} MB)")
            return found, False, len(house.wheels)
        progress(f"environment layer: unpacking {len(house.wheels)} wheels into {VENV}")
        with tempfile.TemporaryDirectory(prefix="modelport-env-", dir=self.scratch) as tmp:
            root = Path(tmp) / "root"
            install_wheels(
                [house.dir / w.name for w in house.wheels],
                root,
                python=env.python,
                python_home=base.python_home,
                version=str(
                    base.config.get("config", {})
                    .get("Labels", {})
                    .get("dev.modelport.base.python", env.python)
                ),
            )
            staging = cached.with_name(cached.name + f".{os.getpid()}.tmp")
            layer = write_layer(tree_entries(root / "opt", "opt"), staging / "layer.tar.gz", level=1)
            (staging / "layer.json").write_text(
                json.dumps({"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size})
            )
            shutil.rmtree(cached, ignore_errors=True)
            staging.rename(cached)
        made = _load_layer(cached)
        assert made is not None
        layer = made
        progress(f"environment layer {layer.digest[:19]} made ({layer.size / 1e6:.0f} MB)")
        return layer, True, len(house.wheels)

    def _wheelhouse(
        self, env: ResolvedEnvironment, base: Base, progress: Progress, *, extra: bool
    ) -> Wheelhouse:
        packages = DockerImageBuilder.packages_of(env) if extra else tuple(env.packages)
        return resolve_wheels(
            packages,
            python=env.python,
            architecture=env.architecture,
            cache_dir=self.cache_dir,
            glibc=base.glibc,
            progress=progress,
            wheel_cache=self.wheel_cache,
            relaxable=DEFAULT_PINS if extra else (),
        )

    def resolve_wheelhouses(self, envs: Sequence[ResolvedEnvironment], progress: Progress) -> int:
        """Resolve the wheelhouses images of ``envs`` need, as a build would, sharing them through the wheel
        cache (a host that reaches the package index fills it for a worker that cannot); how many."""
        done = {}
        for env in envs:
            if env.fingerprint not in done:
                done[env.fingerprint] = self._wheelhouse(env, self._base(env, progress), progress, extra=True)
        return len(done)

    def _code_layer(self, python: str, work: Path, progress: Progress) -> Layer:
        """chalicelib's runtime code under /var/task/chalicelib, with hash-checked .pyc where this
        interpreter is the target's (like the docker builder's code layer)."""
        compile_here = python == f"{sys.version_info[0]}.{sys.version_info[1]}"
        entries = []
        for rel, path in runtime_files():
            entries.append(Entry(f"var/task/chalicelib/{rel}", source=path))
            if compile_here and path.suffix == ".py":
                cached = Path(rel).parent / "__pycache__" / f"{path.stem}.{sys.implementation.cache_tag}.pyc"
                target = work / "pyc" / cached
                target.parent.mkdir(parents=True, exist_ok=True)
                py_compile.compile(
                    str(path),
                    cfile=str(target),
                    dfile=f"/var/task/chalicelib/{rel}",
                    doraise=True,
                    invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
                )
                entries.append(Entry(f"var/task/chalicelib/{cached.as_posix()}", source=target))
        return write_layer(entries, work / "code.tar.gz")

    def _steps_image(self, env: ResolvedEnvironment, progress: Progress) -> str:
        base = self._base(env, progress)
        with tempfile.TemporaryDirectory(prefix="modelport-oci-", dir=self.scratch) as tmp:
            env_layer, _, _ = self._environment_layer(env, base, progress)
            code = self._code_layer(env.python, Path(tmp), progress)
            labels = {"dev.modelport.steps": "1", "dev.modelport.environment-image": self._env_ref(env_layer)}
            config = _config(base, [env_layer, code], labels, _runtime_env(base), list(ENTRYPOINT), [HANDLER])
            tag = hashlib.sha256(f"{env_layer.digest}\n{code.digest}".encode()).hexdigest()[:16]
            repository = self._repository("modelport-steps", progress)
            self._push(base, repository, [env_layer, code], config, tag, progress)
        return f"{self._client_host()}/{repository}:{tag}"

    @staticmethod
    def _env_ref(layer: Layer) -> str:
        return f"modelport/env@{layer.digest}"

    # ------------------------------------------------------------------ push

    def _repository(self, name: str, progress: Progress) -> str:
        if self.repositories is None:
            return name
        uri = self.repositories.ensure_repository(name)
        return uri.split("/", 1)[1]

    def _push(
        self, base: Base, repository: str, layers: list[Layer], config: bytes, tag: str, progress: Progress
    ) -> tuple[str, list[str]]:
        target = self._client(self._client_host())
        uploaded: list[str] = []
        for descriptor in base.layers:
            digest = str(descriptor["digest"])
            if target.blob_exists(repository, digest):
                continue
            if base.client is target and target.mount_blob(repository, digest, base.repository):
                progress(f"base layer {digest[:19]}: mounted from {base.repository}")
                continue
            with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
                blob = Path(tmp) / "blob"
                progress(f"base layer {digest[:19]}: fetching {int(descriptor['size']) / 1e6:.0f} MB")
                base.client.get_blob(base.repository, digest, blob)
                target.push_blob(repository, digest, blob)
            uploaded.append(digest)
        for layer in layers:
            if target.blob_exists(repository, layer.digest):
                progress(f"layer {layer.digest[:19]}: already in {repository}")
                continue
            progress(f"layer {layer.digest[:19]}: uploading {layer.size / 1e6:.1f} MB")
            target.push_blob(repository, layer.digest, layer.path)
            uploaded.append(layer.digest)
        config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
        if not target.blob_exists(repository, config_digest):
            with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
                path = Path(tmp) / "config.json"
                path.write_bytes(config)
                target.push_blob(repository, config_digest, path)
            uploaded.append(config_digest)
        manifest = _manifest(config, config_digest, [*base.layers, *(_descriptor(x) for x in layers)])
        digest = target.put_manifest(repository, tag, manifest, MANIFEST_V2)
        return digest, uploaded


def _runtime_env(base: Base) -> dict[str, str]:
    """The base's environment with PATH and the runtime variables set as the docker recipe's ENV does."""
    env: dict[str, str] = {}
    for item in base.config.get("config", {}).get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    base_path = env.get("PATH", DEFAULT_PATH)
    env["PATH"] = f"{VENV}/bin:{base_path}"
    env.update(RUNTIME_ENV)
    return env


def _descriptor(layer: Layer) -> dict[str, Any]:
    return {"mediaType": LAYER_GZIP, "size": layer.size, "digest": layer.digest}


def _config(
    base: Base,
    layers: list[Layer],
    labels: Mapping[str, str],
    env: Mapping[str, str],
    entrypoint: list[str],
    cmd: list[str],
) -> bytes:
    """The image config: no creation time (so the digest depends on the inputs only)."""
    base_config = base.config
    diff_ids = [*base_config.get("rootfs", {}).get("diff_ids", []), *(x.diff_id for x in layers)]
    doc = {
        "architecture": base_config.get("architecture", "amd64"),
        "os": base_config.get("os", "linux"),
        "config": {
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "User": f"{RUNTIME_UID}:{RUNTIME_UID}",
            "Labels": dict(sorted({**(base_config.get("config", {}).get("Labels") or {}), **labels}.items())),
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "modelport (chalicelib/oci)"}],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _manifest(config: bytes, config_digest: str, layers: list[dict[str, Any]]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": config_digest},
        "layers": [
            {
                "mediaType": LAYER_GZIP if "gzip" in str(x.get("mediaType", "gzip")) else x["mediaType"],
                "size": int(x["size"]),
                "digest": str(x["digest"]),
            }
            for x in layers
        ],
    }
    return json.dumps(doc, indent=3).encode()


def _load_layer(directory: Path) -> Layer | None:
    try:
        doc = json.loads((directory / "layer.json").read_text())
        path = directory / "layer.tar.gz"
        if path.stat().st_size != int(doc["size"]):
            return None
        return Layer(path=path, digest=str(doc["digest"]), diff_id=str(doc["diff_id"]), size=int(doc["size"]))
    except (OSError, ValueError, KeyError):
        return None
