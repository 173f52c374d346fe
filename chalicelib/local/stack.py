"""The local stack as one process: moto + the edge + the Lambda emulator + the API + the event pump.

``modelport up`` runs ``python -m chalicelib.local.stack`` in the background and waits for its state file;
``modelport down`` stops it by the PID written there. Inside, the control plane is wired exactly as on
AWS (``wiring.aws_container``) with one difference, ``endpoint_url`` = the edge:

- moto (DynamoDB, S3, SQS, CloudWatch Logs, Step Functions with execution switched on) behind the edge,
  whose port is ``MOTO_PORT``, so moto's state-machine interpreter calls Lambda back through it;
- the emulator runs model functions as containers (docker engine) or processes (no engine), and their
  output is shipped to CloudWatch Logs (``/aws/lambda/<function>``), where ``modelport logs`` reads it;
- images are built with the engine and pushed to the local registry (``127.0.0.1:5000``), or built as
  process images;
- the Chalice app is served on ``api_port``; the event pump feeds the deploy queue and its DLQ to the
  app's SQS handlers.

State lives in moto's memory: it does not survive ``down`` + ``up`` (built images and wheels are cached
on disk, so deploying again is quick).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from chalicelib.docker.registry import pid_alive as pid_alive
from chalicelib.local.awslambda.emulator import LambdaEmulator
from chalicelib.local.chalice_app import PROJECT_ROOT, load_app
from chalicelib.local.edge.moto import MotoServer, start_moto
from chalicelib.local.edge.server import EdgeServer
from chalicelib.local.launchers import ContainerLauncher, ProcessImages, ProcessLauncher
from chalicelib.local.logs import LAMBDA_LOGGER, STATES_LOGGER, LogShipper

log = logging.getLogger("modelport.local.stack")

DEFAULT_EDGE_PORT = 4566
DEFAULT_API_PORT = 8000
REGISTRY_PORT = 5000
STATE_FILE = "stack.json"
API_FUNCTION = "modelport_api"
"""The log group the local API process's output goes to (``/aws/lambda/modelport_api``), as the API
function's does on Lambda; the underscore keeps it apart from every model function (``modelport-<slug>``)."""
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
"""What every client of the local endpoint signs with: moto takes any, and real ones never go there."""
Launch = Literal["auto", "container", "process"]


def home() -> Path:
    """The local stack's own directory: ``$MODELPORT_HOME``, else ``~/.modelport``."""
    configured = os.environ.get("MODELPORT_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".modelport"


@dataclass(frozen=True)
class StackState:
    """What ``modelport up`` leaves for the CLI (``~/.modelport/stack.json``, mode 0600: it holds a key)."""

    pid: int
    api_url: str
    endpoint_url: str
    admin_key: str
    launcher: str
    launcher_note: str
    registry: str | None
    started_at: str
    log_file: str
    ready: bool = False
    worker: str = "in-process"
    wheel_cache: str | None = None
    """``s3://BUCKET/PREFIX`` of the shared wheel cache the worker function reads (``modelport wheels``)."""
    data_bucket: str = ""
    """Where batch inputs go (``inputs/<model>/...``) and their results come (``outputs/<model>/...``)."""

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATE_FILE
        staging = path.with_suffix(".tmp")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(self), out, indent=2)
        staging.replace(path)
        return path

    @classmethod
    def read(cls, directory: Path) -> StackState | None:
        try:
            doc = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
            return cls(**doc)
        except (OSError, ValueError, TypeError):
            return None


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_launcher(wanted: Launch) -> tuple[str, str, Any]:
    """("container" | "process", why, the docker client or None). ``auto`` takes containers when an engine
    answers and a base image is there or can be made (debootstrap as root)."""
    if wanted == "process":
        return "process", "asked for process environments", None
    from chalicelib.docker import ImageError, docker_client

    try:
        client = docker_client()
    except ImageError as exc:
        if wanted == "container":
            raise
        return "process", f"no docker engine answers ({exc})", None
    if wanted == "auto" and not _can_have_base(client):
        return (
            "process",
            "no local base image, and it cannot be built here (needs root and debootstrap)",
            None,
        )
    return "container", "a docker engine answers", client


def _can_have_base(client: Any) -> bool:
    import shutil

    from chalicelib.docker.baseimage import base_image_tag, image_exists

    if os.environ.get("MODELPORT_BASE_IMAGE") or image_exists(client, base_image_tag("3.11")):
        return True
    return os.geteuid() == 0 and shutil.which("debootstrap") is not None


class LocalStack:
    """Starts and stops the pieces in order; ``start`` raises (after undoing what it did) if one fails.

    The benches and tests choose what differs from ``modelport up``: ``image_builder`` (None: docker when
    an engine answers, else process images), ``process_images`` (where process environments find their
    images; None: the cache's), ``ship_logs`` (False: function output stays in this process's logging).
    """

    def __init__(
        self,
        *,
        edge_port: int = DEFAULT_EDGE_PORT,
        api_port: int = DEFAULT_API_PORT,
        launcher: Launch = "auto",
        admin_key: str | None = None,
        registry: bool = True,
        api_process: bool = True,
        progress: Callable[[str], None] = lambda line: None,
        emulator_options: dict[str, Any] | None = None,
        image_builder: str | None = None,
        process_images: ProcessImages | None = None,
        ship_logs: bool = True,
        worker: Literal["auto", "in-process", "function"] = "auto",
        registry_port: int = REGISTRY_PORT,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """``settings``: fields of ``chalicelib.settings.Settings`` to set otherwise than the stack does."""
        self.settings_overrides = dict(settings or {})
        self.edge_port = edge_port
        self.api_port = api_port
        self.wanted: Launch = launcher
        self.use_registry = registry
        self.api_process = api_process
        self.progress = progress
        self.emulator_options = emulator_options or {}
        self.image_builder = image_builder
        self.process_images = process_images
        self.ship_logs = ship_logs
        self.worker = worker
        self.registry_port = registry_port
        """Where deploy-queue messages go: ``chalicelib.worker.handler`` in this process, or (on an engine)
        the worker as a container-image function in the emulator, built daemonlessly (``worker_function``);
        ``auto``: the function where there are containers and a registry."""
        from chalicelib.services.accounts import generate_key

        self.admin_key = admin_key or generate_key()
        self._undo: list[Callable[[], None]] = []
        self.launcher = ""
        self.launcher_note = ""
        self.registry: str | None = None
        self.emulator: LambdaEmulator | None = None
        self.edge: EdgeServer | None = None
        self.moto: MotoServer | None = None
        self.container: Any = None
        """The control plane's ``wiring.Container`` (the one ``wiring.override`` serves), once started."""
        self.api_url = ""
        self.outputs: dict[str, str] = {}
        self.wheel_cache: str | None = None

    @property
    def endpoint_url(self) -> str:
        assert self.edge is not None
        return self.edge.url

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._check_ports()
        # The stack's own boto3 clients talk to moto only: never send real credentials there.
        os.environ.update({name.upper(): value for name, value in LOCAL_CREDENTIALS.items()})
        os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_PROFILE", None)
        client = self._start_endpoint()
        if client is not None and self.use_registry:
            self._start_registry()
        settings = self._wire(client)
        if self.ship_logs:
            self._ship_logs(settings)
        app = load_app()
        if self.api_process:
            self.api_url = self._api_process(settings)
        else:
            from chalicelib.local.api import ApiServer

            api = ApiServer(app.app, port=self.api_port).start()
            self.api_url = api.url
            self._undo.append(api.stop)
        self.progress(f"API {self.api_url}" + (" (its own process)" if self.api_process else ""))
        self._start_pump(settings, app)

    def _check_ports(self) -> None:
        for port, what in ((self.edge_port, "the AWS endpoint"), (self.api_port, "the API")):
            if port and not port_free(port):
                from chalicelib.core.errors import Conflict

                hint = "stop what uses it or pick another port"
                raise Conflict(f"port {port} for {what} is taken", hint=hint)

    def _start_endpoint(self) -> Any:
        """The emulator, the edge and moto behind it; returns the docker client (None: processes)."""
        self.launcher, self.launcher_note, client = choose_launcher(self.wanted)
        self.progress(f"execution environments: {self.launcher}s ({self.launcher_note})")
        images = self.process_images if self.process_images is not None else ProcessImages()
        launcher = ContainerLauncher(client) if client is not None else ProcessLauncher(images)
        emulator = self.emulator = LambdaEmulator(launcher, **self.emulator_options)
        self._undo.append(emulator.shutdown)

        edge = EdgeServer(self.edge_port, "", emulator).start()
        self.edge = edge
        self._undo.append(edge.stop)
        saved_moto_port = os.environ.get("MOTO_PORT")
        self.moto = start_moto(edge.port)
        edge.moto_url = self.moto.url
        self._undo.append(self.moto.stop)
        self._undo.append(lambda: _restore_env("MOTO_PORT", saved_moto_port))
        self.progress(f"AWS endpoint {edge.url} (moto {self.moto.url}, Lambda emulator)")
        return client

    def _start_registry(self) -> None:
        from chalicelib.docker.registry import start_registry, stop_registry

        try:
            self.registry = start_registry(self.registry_port)
            self._undo.append(lambda: _ignore(stop_registry(self.registry_port)))
            self.progress(f"image registry {self.registry}")
        except Exception as exc:  # images then stay in the engine, which the launcher reads too
            self.progress(f"no image registry ({exc}); images stay in the local engine")

    def _wire(self, client: Any) -> Any:
        """The infrastructure on moto and the control plane wired to it, as on AWS; returns the settings."""
        from chalicelib import wiring
        from chalicelib.aws.infra import create_infrastructure
        from chalicelib.settings import Settings

        settings = replace(
            Settings.from_env({}),
            endpoint_url=self.endpoint_url,
            admin_key=self.admin_key,
            image_builder=self.image_builder or ("docker" if client is not None else "process"),
            registry=self.registry,
            functions="lambda",
            **{"api_log_group": f"/aws/lambda/{API_FUNCTION}", **self.settings_overrides},
        )
        self.outputs = create_infrastructure(settings)
        self.progress("tables, bucket, queues and notification created")
        self.container = wiring.aws_container(settings)
        wiring.override(self.container)
        self._undo.append(lambda: wiring.override(None))
        return settings

    def _ship_logs(self, settings: Any) -> None:
        shipper = LogShipper(container_client(settings, "logs"))
        self._undo.append(shipper.close)
        for name in (LAMBDA_LOGGER, STATES_LOGGER):
            shipped = logging.getLogger(name)
            shipped.setLevel(logging.DEBUG)
            shipped.addHandler(shipper)
            # Function output belongs in CloudWatch Logs, as on Lambda: not also in the stack's own log
            # (the app's "modelport" logger prints to stdout), one formatted line per invocation.
            shipped.propagate = False
            self._undo.append(lambda shipped=shipped: shipped.removeHandler(shipper))  # type: ignore[misc]
            self._undo.append(lambda shipped=shipped: setattr(shipped, "propagate", True))  # type: ignore[misc]

    def _start_pump(self, settings: Any, app: Any) -> None:
        from chalicelib import worker
        from chalicelib.local.pump import EventPump, QueueMapping

        deploy: Any = worker.handler
        where = "in process"
        if self.worker == "auto":
            self.worker = "function" if self.launcher == "container" and self.registry else "in-process"
        if self.worker == "function":
            deploy, where = self._worker_function(settings), "a container-image function"
        pump = EventPump(
            container_client(settings, "sqs"),
            [
                QueueMapping(
                    self.outputs["deploy_queue_url"], self.outputs["deploy_queue_arn"],
                    deploy, "deploy-worker",
                ),
                QueueMapping(
                    self.outputs["deploy_dlq_url"], self.outputs["deploy_dlq_arn"],
                    app.on_bundle_abandoned, "on_bundle_abandoned",
                ),
                QueueMapping(
                    self.outputs["jobs_queue_url"], self.outputs["jobs_queue_arn"], app.on_job, "on_job",
                ),
                QueueMapping(
                    self.outputs["invocations_queue_url"], self.outputs["invocations_queue_arn"],
                    app.on_invocation, "on_invocation",
                ),
            ],
            region=settings.region,
        ).start()  # fmt: skip
        self._undo.append(pump.stop)
        self.progress(
            f"event pump: deploy queue -> the deploy worker ({where}), DLQ, jobs and invocations -> the app"
        )

    def _worker_function(self, settings: Any) -> Any:
        """The worker built into the registry and created in the emulator; the pump's target invoking it."""
        from chalicelib.core.errors import ConfigError
        from chalicelib.local.worker_function import create_worker_function, lambda_target

        if self.launcher != "container" or self.registry is None:
            raise ConfigError(
                "the deploy worker runs as a function only on a docker engine with the local registry",
                hint="use worker='in-process' with the process launcher",
            )
        lambda_client = container_client(settings, "lambda")
        create_worker_function(lambda_client, settings, self.registry, self.progress)
        # The worker's container reaches no package index here: the host shares what it has resolved.
        from chalicelib.docker.wheel_cache import ArtifactWheelCache
        from chalicelib.local.wheels import share_host_wheelhouses

        share_host_wheelhouses(
            ArtifactWheelCache(self.container.artifacts, settings.wheel_cache_prefix), self.progress
        )
        self.wheel_cache = f"s3://{settings.bundle_bucket}/{settings.wheel_cache_prefix}"
        return lambda_target(lambda_client, settings.worker_function)

    def _api_process(self, settings: Any, wait_s: float = 60.0) -> str:
        """The API served by ``python -m chalicelib.local.api``, wired from ``settings`` as a second
        control-plane instance (on AWS the API and the model functions are different Lambdas too, and
        one interpreter's GIL would otherwise carry both: 728 against 1063 req/s, bench/RESULTS.md)."""
        import subprocess

        from chalicelib.settings import settings_env

        env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(
            [sys.executable, "-m", "chalicelib.local.api", "--port", str(self.api_port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=PROJECT_ROOT, env=env, text=True,
        )  # fmt: skip

        def stop_api() -> None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

        self._undo.append(stop_api)
        answer: queue.SimpleQueue[str] = queue.SimpleQueue()
        assert child.stdout is not None
        stdout = child.stdout

        api_log = logging.getLogger(f"modelport.local.lambda.{API_FUNCTION}")

        def read() -> None:  # the first line is the address; the rest is its log, as Lambda ships it
            answer.put(stdout.readline())
            for line in stdout:
                if line.strip():
                    api_log.info(line.rstrip("\n"))

        threading.Thread(target=read, name="api-stdout", daemon=True).start()
        try:
            line = answer.get(timeout=wait_s)
        except queue.Empty:
            line = ""
        if not line.startswith("listening "):
            from chalicelib.core.errors import ModelportError

            raise ModelportError(f"the API process did not start ({line.strip() or 'no answer'})")
        return line.split(" ", 1)[1].strip()

    def stop(self) -> None:
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:
                log.warning("stopping the local stack: a step failed", exc_info=True)

    def state(self, log_file: Path, *, ready: bool) -> StackState:
        return StackState(
            pid=os.getpid(),
            api_url=self.api_url,
            endpoint_url=self.endpoint_url,
            admin_key=self.admin_key,
            launcher=self.launcher,
            launcher_note=self.launcher_note,
            registry=self.registry,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            log_file=str(log_file),
            ready=ready,
            worker=self.worker,
            wheel_cache=self.wheel_cache,
            data_bucket=self.outputs.get("data_bucket", ""),
        )


def container_client(settings: Any, service: str) -> Any:
    import boto3

    return boto3.session.Session(region_name=settings.region).client(
        service, endpoint_url=settings.endpoint_url
    )


def _ignore(_: object) -> None:
    pass


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    """Run the stack until SIGTERM/SIGINT; write the state file once every piece answers."""
    parser = argparse.ArgumentParser(prog="python -m chalicelib.local.stack")
    parser.add_argument("--edge-port", type=int, default=DEFAULT_EDGE_PORT)
    parser.add_argument("--api-port", type=int, default=DEFAULT_API_PORT)
    parser.add_argument("--launcher", choices=["auto", "container", "process"], default="auto")
    parser.add_argument("--worker", choices=["auto", "in-process", "function"], default="auto")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--log-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    directory = args.home or home()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stack = LocalStack(
        edge_port=args.edge_port,
        api_port=args.api_port,
        launcher=args.launcher,
        worker=args.worker,
        admin_key=os.environ.get("MODELPORT_ADMIN_KEY") or None,
        progress=lambda line: log.info("%s", line),
    )
    try:
        stack.start()
    except Exception as exc:
        log.error("the local stack did not start: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stack.state(args.log_file or directory / "stack.log", ready=True).write(directory)
    log.info("ready: API %s, AWS endpoint %s", stack.api_url, stack.endpoint_url)
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        log.info("stopping")
        stack.stop()
        current = StackState.read(directory)
        if current is not None and current.pid == os.getpid():
            with contextlib.suppress(OSError):
                (directory / STATE_FILE).unlink()
        time.sleep(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
