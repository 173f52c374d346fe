"""Launchers start the runtime of one execution environment: a container of the function's image, or a
process running the same runtime code when no docker engine answers.

The emulator gives a launcher a ``LaunchSpec`` (the function's configuration plus the address of the
environment's Runtime API server) and gets back a ``LaunchedRuntime`` handle: its output, its exit (``wait``),
``kill``, and its peak memory for the REPORT line. Nothing here imports boto3 or chalice; the docker SDK
is only used through the client a ``ContainerLauncher`` is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from chalicelib.local.runtime_api import REPO_ROOT, RuntimeProcess, start_runtime_process

EPHEMERAL_STORAGE_MB = 512
"""Lambda's default /tmp size."""
RUNTIME_USER = "1000:1000"
PROCESS_IMAGE_FILE = "process-image.json"


class ImageUnavailable(LookupError):
    """The function's image cannot be found (not in the engine, no process image for it)."""


@dataclass(frozen=True)
class LaunchSpec:
    """What one execution environment runs: the function's configuration and its Runtime API address."""

    function_name: str
    version: str
    image_uri: str
    memory_mb: int
    timeout_s: int
    environment: Mapping[str, str]
    runtime_api: str
    ephemeral_mb: int = EPHEMERAL_STORAGE_MB
    region: str = "us-east-1"
    log_stream: str = ""

    def lambda_variables(self) -> dict[str, str]:
        """The variables Lambda sets in every environment; they win over the function's own."""
        return {
            **self.environment,
            "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": self.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream or f"local/{uuid.uuid4().hex}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # Lambda hands every function its role's credentials; locally the edge takes these dummy ones.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "TZ": ":UTC",
        }


@dataclass(frozen=True)
class Exit:
    """How a runtime ended: ``status`` as ``Popen.returncode`` gives it (negative: killed by that signal)."""

    status: int
    oom_killed: bool = False

    @property
    def reason(self) -> str:
        """Lambda's wording: ``Runtime exited with error: signal: killed`` / ``exit status 1``."""
        if self.status == 0:
            return "Runtime exited without providing a reason"
        if self.status < 0:
            return f"Runtime exited with error: signal: {_signal_name(-self.status)}"
        return f"Runtime exited with error: exit status {self.status}"

    @property
    def error_type(self) -> str:
        return "Runtime.OutOfMemory" if self.oom_killed else "Runtime.ExitError"


def _signal_name(number: int) -> str:
    """Go's names for signals, as Lambda prints them."""
    names = {9: "killed", 15: "terminated", 11: "segmentation fault", 6: "aborted", 2: "interrupt"}
    if number in names:
        return names[number]
    try:
        return signal.Signals(number).name.lower()
    except ValueError:
        return str(number)


def _peak_rss_mb(pid: int | None) -> int | None:
    """VmHWM (peak resident set) of a live process, in MB; None when it cannot be read."""
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return -(-int(line.split()[1]) // 1024)
    except (OSError, ValueError, IndexError):
        return None
    return None


class LaunchedRuntime(Protocol):
    """A launched runtime (a process or a container)."""

    @property
    def pid(self) -> int | None:
        """Its main process's id on this host, when known."""

    def output(self) -> Iterator[bytes]:
        """Its stdout and stderr as they come, in chunks, until it exits."""

    def wait(self) -> Exit:
        """Block until it has exited."""

    def kill(self) -> None:
        """Kill it at once (SIGKILL) and release what it held; idempotent."""

    def max_memory_mb(self) -> int | None: ...


class Launcher(Protocol):
    kind: str

    def code_sha256(self, image_uri: str) -> str:
        """The image's digest (hex), Lambda's CodeSha256 for an image function; ImageUnavailable if none."""

    def launch(self, spec: LaunchSpec) -> LaunchedRuntime: ...


# --------------------------------------------------------------------------- containers


class ContainerLauncher:
    """Runs the function's image as Lambda runs it: host network (the Runtime API is on 127.0.0.1),
    read-only root, a tmpfs /tmp of EphemeralStorage (512 MiB unless set), uid 1000, memory (and swap)
    limited to MemorySize.

    Containers are removed by the exit watcher right after their exit state is read rather than with
    ``auto_remove``: an auto-removed container can vanish before ``OOMKilled`` is read, and an OOM kill
    must be reported as ``Runtime.OutOfMemory``, not as a plain exit.
    """

    kind = "container"

    def __init__(self, client: Any) -> None:
        self.client = client

    def code_sha256(self, image_uri: str) -> str:
        import docker  # type: ignore[import-untyped]

        image = None
        if _from_registry(image_uri):  # as Lambda does, the tag is resolved now, in the registry: a
            with contextlib.suppress(docker.errors.DockerException):  # local copy may be an older push
                image = self.client.images.pull(image_uri)
        if image is None:
            try:
                image = self.client.images.get(image_uri)
            except docker.errors.ImageNotFound:
                raise ImageUnavailable(f"no image {image_uri} in the engine or its registry") from None
        digests = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or [] if "@" in d]
        return str(digests[0] if digests else image.id).removeprefix("sha256:")

    def launch(self, spec: LaunchSpec) -> LaunchedRuntime:
        memory = f"{spec.memory_mb}m"
        container = self.client.containers.run(
            spec.image_uri,
            detach=True,
            name=f"modelport-{spec.function_name}-{uuid.uuid4().hex[:8]}",
            labels={"modelport.function": spec.function_name, "modelport.version": spec.version},
            environment=spec.lambda_variables(),
            network_mode="host",
            read_only=True,
            tmpfs={"/tmp": f"rw,size={spec.ephemeral_mb}m"},  # noqa: S108 - Lambda's writable /tmp
            mem_limit=memory,
            memswap_limit=memory,
            user=RUNTIME_USER,
        )
        return _ContainerRuntime(container)


def _from_registry(image_uri: str) -> bool:
    """Whether the reference names a registry host (``127.0.0.1:5000/repo:v1``, ``x.dkr.ecr...``), not
    an image only the engine holds (``modelport/iris:v1``)."""
    first, sep, _ = image_uri.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


class _ContainerRuntime:
    def __init__(self, container: Any) -> None:
        self.container = container
        self._pid: int | None = None
        self._killed = False

    def output(self) -> Iterator[bytes]:
        try:
            yield from self.container.logs(stream=True, follow=True, stdout=True, stderr=True)
        except Exception:  # the container is gone: its output ends
            return

    def wait(self) -> Exit:
        import docker

        try:
            status = int(self.container.wait().get("StatusCode", 137))
            self.container.reload()
            oom = bool(self.container.attrs.get("State", {}).get("OOMKilled")) and not self._killed
        except docker.errors.DockerException:
            status, oom = 137, False  # removed under us, or the engine went away: it is gone
        self._remove()
        # 128 + n is how a container reports death by signal n; Popen says -n.
        return Exit(-(status - 128) if status > 128 else status, oom)

    def kill(self) -> None:
        self._killed = True
        self._remove()

    def _remove(self) -> None:
        import docker

        with contextlib.suppress(docker.errors.DockerException):  # already gone or being removed
            self.container.remove(force=True)

    @property
    def pid(self) -> int | None:
        if self._pid is None:
            try:
                self.container.reload()
                self._pid = int(self.container.attrs["State"]["Pid"]) or None
            except Exception:
                return None
        return self._pid

    def max_memory_mb(self) -> int | None:
        return _peak_rss_mb(self.pid)


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcessImage:
    """An image's content as directories, for running it as a process: the python of a virtualenv with
    the image's packages, the prepared model directory, and the directory holding ``chalicelib``."""

    python: Path
    model_dir: Path
    pythonpath: Path
    digest: str = ""
    """The image's digest (``sha256:...``) when known; else the sha256 of ``model-config.json``."""

    def code_sha256(self) -> str:
        if self.digest:
            return self.digest.removeprefix("sha256:")
        return hashlib.sha256((self.model_dir / "model-config.json").read_bytes()).hexdigest()


class ImageResolver(Protocol):
    def resolve(self, image_uri: str) -> ProcessImage:
        """ImageUnavailable when there is no process image for ``image_uri``."""


def _default_root() -> Path:
    from chalicelib.docker import cache_root

    return cache_root() / "process-images"


class ProcessImages:
    """The default ``ImageResolver``: images registered in this process first, then the directory
    ``<root>/<key(image_uri)>/`` holding ``process-image.json`` (``python``, ``pythonpath``, optional
    ``digest``; relative paths are relative to that directory) and ``model/``. ``root`` defaults to
    ``$MODELPORT_CACHE/process-images`` (``~/.cache/modelport/process-images``). See docs/local-stack.md.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else _default_root()
        self._images: dict[str, ProcessImage] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(image_uri: str) -> str:
        """A directory name for an image: ``modelport/iris-onnx:v1`` is ``modelport_iris-onnx_v1``."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", image_uri).strip("._") or "_"

    def register(self, image_uri: str, image: ProcessImage) -> ProcessImage:
        with self._lock:
            self._images[image_uri] = image
        return image

    def resolve(self, image_uri: str) -> ProcessImage:
        with self._lock:
            if image_uri in self._images:
                return self._images[image_uri]
        directory = self.root / self.key(image_uri)
        try:
            doc = json.loads((directory / PROCESS_IMAGE_FILE).read_text(encoding="utf-8"))
            return ProcessImage(
                python=directory / doc["python"],
                model_dir=directory / doc.get("model_dir", "model"),
                pythonpath=directory / doc["pythonpath"],
                digest=str(doc.get("digest", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ImageUnavailable(f"no process image for {image_uri} in {directory} ({exc})") from None

    def write(
        self,
        image_uri: str,
        model_src: Path,
        manifest: Any,
        *,
        python: Path = Path(sys.executable),
        pythonpath: Path = REPO_ROOT,
        digest: str = "",
    ) -> ProcessImage:
        """Make the process image of ``manifest`` (a ``ModelConfigFile``) from its source directory: the
        model directory as the image has it, with this interpreter and this checkout's code by default."""
        from chalicelib.runtime.layout import prepare_model_dir

        directory = self.root / self.key(image_uri)
        prepare_model_dir(model_src, manifest, directory / "model")
        doc = {"python": str(python), "pythonpath": str(pythonpath), "model_dir": "model", "digest": digest}
        (directory / PROCESS_IMAGE_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return self.resolve(image_uri)


class ProcessLauncher:
    """Runs the runtime as a process when no docker engine answers: same code, same Runtime API, an
    environment built from scratch (no host variables leak in), a private directory standing in for /tmp.
    MemorySize is passed to the runtime but not enforced (no cgroup); the peak RSS is reported."""

    kind = "process"

    def __init__(self, resolver: ImageResolver | None = None) -> None:
        self.resolver: ImageResolver = resolver if resolver is not None else ProcessImages()

    def code_sha256(self, image_uri: str) -> str:
        return self.resolver.resolve(image_uri).code_sha256()

    def launch(self, spec: LaunchSpec) -> LaunchedRuntime:
        image = self.resolver.resolve(spec.image_uri)
        process = start_runtime_process(
            image.model_dir,
            spec.runtime_api,
            python=str(image.python),
            code_root=image.pythonpath,
            env=spec.lambda_variables(),
            memory_mb=spec.memory_mb,
            function_name=spec.function_name,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return _ProcessRuntime(process)


class _ProcessRuntime:
    def __init__(self, process: RuntimeProcess) -> None:
        self.process = process

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def output(self) -> Iterator[bytes]:
        stream = self.process.stdout
        if stream is None:
            return
        fd = stream.fileno()
        try:
            while chunk := os.read(fd, 65536):
                yield chunk
        except OSError:
            return
        finally:
            stream.close()

    def wait(self) -> Exit:
        return Exit(self.process.wait())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.stop(timeout=5)

    def max_memory_mb(self) -> int | None:
        return _peak_rss_mb(self.process.pid)
