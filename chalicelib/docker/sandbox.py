"""The docker adapter of the ``Sandbox`` port: the probe in a locked-down, throw-away container.

The container runs the model's own environment image plus the runtime code (``DockerImageBuilder.
probe_image``) with no network, a read-only root, a small tmpfs ``/tmp`` as its only writable place, uid
1000, no host environment, a PID, CPU and memory limit, no capabilities, ``no-new-privileges``, and the
artifact (a private copy of just that file) bind-mounted read-only. It is killed at the timeout and always
removed, so nothing it started survives: its PID namespace ends with it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chalicelib.core.environment import resolve_environment
from chalicelib.core.errors import Unavailable
from chalicelib.core.native import NativeContract
from chalicelib.core.ports import Progress, Sandbox
from chalicelib.core.probe import (
    EXCERPT_CHARS,
    MAX_OUTPUT,
    TIMEOUT_S,
    ProbeRequest,
    failure,
    no_sandbox,
    read_result,
)
from chalicelib.docker import EngineUnavailable, _first_line
from chalicelib.docker.dockerfile import RUNTIME_UID, TASK_ROOT, VENV

LABEL = "dev.modelport.probe"
PROBE_DIR = "/probe"
# -I: no PYTHON* variables, no user site, no cwd on sys.path; the runtime code is found where images put it.
_BOOTSTRAP = (
    f"import sys; sys.path.insert(0, {TASK_ROOT!r}); "
    "from chalicelib.runtime.probe import main; sys.exit(main())"
)


def _quiet(_: str) -> None:
    pass


class DockerSandbox:
    """Probes in containers of ``builder``'s engine; ``builder`` may be a factory, called on first use (so a
    CLI without an engine refuses only the artifacts that need a sandbox)."""

    def __init__(
        self,
        builder: Any,
        *,
        timeout_s: float = TIMEOUT_S,
        memory: str = "1g",
        pids_limit: int = 64,
        cpus: float = 1.0,
        tmpfs_size: str = "64m",
        progress: Progress = _quiet,
    ) -> None:
        self._builder = builder
        self.timeout_s = timeout_s
        self.memory = memory
        self.pids_limit = pids_limit
        self.cpus = cpus
        self.tmpfs_size = tmpfs_size
        self.progress = progress
        self._lock = threading.Lock()

    def builder(self, request: ProbeRequest) -> Any:
        with self._lock:
            if isinstance(self._builder, type) or not hasattr(self._builder, "probe_image"):
                factory: Callable[[], Any] = self._builder
                try:
                    self._builder = factory()
                except EngineUnavailable:
                    raise no_sandbox(request, "no docker engine answers here") from None
            return self._builder

    def probe(self, request: ProbeRequest) -> NativeContract:
        builder = self.builder(request)
        env = resolve_environment(request.config, "sklearn")
        image = builder.probe_image(env, self.progress)
        with tempfile.TemporaryDirectory(prefix="modelport-probe-") as tmp:
            # A private, world-readable copy of just the artifact: uid 1000 must read it, and it sees no
            # other file of the bundle; its name holds no tenant text.
            name = "artifact.skops" if request.format == "skops" else "artifact.pkl"
            staged = Path(tmp) / name
            shutil.copyfile(request.artifact, staged)
            staged.chmod(0o444)
            Path(tmp).chmod(0o755)
            out, err, kind = self._run(builder.client, image, staged, request)
        if kind is not None:
            raise failure(request.rel, kind, excerpt=err)
        return read_result(out, request.rel, excerpt=err)

    def _run(self, client: Any, image: str, staged: Path, request: ProbeRequest) -> tuple[bytes, bytes, Any]:
        import docker  # type: ignore[import-untyped]

        inside = f"{PROBE_DIR}/{staged.name}"
        command = ["-I", "-c", _BOOTSTRAP, inside, request.rel, request.format]
        if request.format == "skops":
            command += list(request.config.trusted_types)
        try:
            container = client.containers.create(
                image,
                entrypoint=[f"{VENV}/bin/python"],
                command=command,
                working_dir=TASK_ROOT,
                user=f"{RUNTIME_UID}:{RUNTIME_UID}",
                environment={},
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={self.tmpfs_size},mode=1777"},  # noqa: S108
                volumes={str(staged): {"bind": inside, "mode": "ro"}},
                mem_limit=self.memory,
                memswap_limit=self.memory,
                pids_limit=self.pids_limit,
                nano_cpus=int(self.cpus * 1e9),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                ipc_mode="private",
                labels={LABEL: "1"},
                log_config=docker.types.LogConfig(
                    type="json-file", config={"max-size": f"{2 * MAX_OUTPUT}", "max-file": "1"}
                ),
                stdin_open=False,
                detach=True,
            )
        except docker.errors.DockerException as exc:
            raise Unavailable(f"cannot start the sandbox: {_first_line(exc)}") from None
        try:
            container.start()
            timed_out = False
            try:
                status = container.wait(timeout=self.timeout_s)
            except Exception:  # requests' ReadTimeout (or ConnectionError) when the timeout passes
                timed_out = True
                with contextlib.suppress(docker.errors.DockerException):
                    container.kill()
                status = {}
            out = _capped(container.logs(stdout=True, stderr=False, stream=True), MAX_OUTPUT + 1)
            err = _tail(container.logs(stdout=False, stderr=True, tail=20), 4 * EXCERPT_CHARS)
            if timed_out:
                return out, err, "timed_out"
            container.reload()
            state = container.attrs.get("State", {})
            code = int(status.get("StatusCode", state.get("ExitCode", -1)))
            if state.get("OOMKilled"):
                return out, err, "out_of_memory"
            if code not in (0, 3):
                return out, err, "crashed"
            return out, err, None
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True, v=True)


def _capped(stream: Any, limit: int) -> bytes:
    data = bytearray()
    for chunk in stream:
        data += chunk
        if len(data) >= limit:
            break
    with contextlib.suppress(Exception):
        stream.close()
    return bytes(data[:limit])


def _tail(data: bytes, limit: int) -> bytes:
    return data[-limit:]


def _implements_the_port(sandbox: DockerSandbox) -> Sandbox:
    return sandbox


def local_sandbox(progress: Progress = _quiet) -> DockerSandbox:
    """The sandbox of the docker engine here, connected only when an artifact needs it (else refused)."""
    from chalicelib.docker.builder import DockerImageBuilder

    return DockerSandbox(DockerImageBuilder, progress=progress)
