"""The ``modelport`` command."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from chalicelib.core.errors import ModelportError

F = TypeVar("F", bound=Callable[..., Any])

USAGE_ERROR = 2


def _friendly(func: F) -> F:
    """Print a user's mistake as one line and exit 2; never show a traceback for it."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ModelportError as exc:
            click.echo(f"error: {exc}", err=True)
            status = getattr(exc, "status", 400)  # the API's answer: a 5xx is not the user's mistake
            sys.exit(1 if isinstance(status, int) and status >= 500 else USAGE_ERROR)
        except (OSError, MemoryError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _local_sandbox() -> Any:
    """The docker sandbox of the engine here, connected only when an artifact needs it (else refused)."""
    from chalicelib.docker.sandbox import local_sandbox

    def progress(line: str) -> None:
        if line.startswith(("building ", "pulling ", "no registry")):
            click.echo(f"sandbox: {line}", err=True)

    return local_sandbox(progress)


model_dir_arg = click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelport")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Modelport: deploy trained models as serverless functions on AWS."""
    ctx.obj = {"client": _client}  # for the commands of other modules (cli_jobs)


@cli.command()
@model_dir_arg
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@_friendly
def inspect(model_dir: Path, fmt: str) -> None:
    """Show the framework and native inputs/outputs of the model in DIR."""
    from chalicelib.services.intake import inspect_dir

    native = inspect_dir(model_dir, _local_sandbox()).native
    if fmt == "json":
        click.echo(native.model_dump_json(indent=2))
        return
    click.echo(f"framework: {native.framework}")
    click.echo(f"task:      {native.task}")
    if native.model_type:
        click.echo(f"type:      {native.model_type}")
    for title, side in (("inputs", native.inputs), ("outputs", native.outputs)):
        click.echo(f"{title}:")
        if side.kind == "tensors":
            for t in side.tensors:
                click.echo(f"  {t.name}: {t.describe()}")
        else:
            click.echo("  " + json.dumps(side.json_schema, sort_keys=True))
    if native.feature_names:
        click.echo("features:  " + ", ".join(native.feature_names))
    if native.classes is not None:
        click.echo("classes:   " + ", ".join(map(str, native.classes)))
    for key, value in sorted(native.metadata.items()):
        click.echo(f"{key}: {value}")


@cli.command()
@model_dir_arg
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.option("--version", "version", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_friendly
def manifest(model_dir: Path, fmt: str, version: int, output: Path | None) -> None:
    """Print the model config file of the model in DIR."""
    from chalicelib.services.intake import config_file_for_dir

    doc = config_file_for_dir(model_dir, version=version, sandbox=_local_sandbox())
    text = doc.to_yaml() if fmt == "yaml" else doc.to_json()
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} ({doc.name} v{doc.version}, {doc.digest})", err=True)


@cli.command()
@model_dir_arg
@_friendly
def openapi(model_dir: Path) -> None:
    """Print the OpenAPI 3.1 document of the model's invoke endpoints."""
    from chalicelib.core.openapi import openapi_document
    from chalicelib.services.intake import config_file_for_dir

    click.echo(
        json.dumps(openapi_document(config_file_for_dir(model_dir, sandbox=_local_sandbox())), indent=2)
    )


@cli.command()
@click.argument("which", type=click.Choice(["model-config", "modelport-yaml"]))
def schema(which: str) -> None:
    """Print a JSON Schema: the model config file's or modelport.yaml's."""
    from chalicelib.core.config_file import config_json_schema, manifest_json_schema, schema_text

    doc = manifest_json_schema() if which == "model-config" else config_json_schema()
    click.echo(schema_text(doc), nl=False)


@cli.command()
def keygen() -> None:
    """Print a new API key, e.g. for MODELPORT_ADMIN_KEY (the bootstrap admin)."""
    from chalicelib.services.accounts import generate_key

    click.echo(generate_key())


@cli.group()
def infra() -> None:
    """Create or delete the tables, bucket and queues (AWS, or any endpoint in MODELPORT_ENDPOINT_URL)."""


@infra.command("create")
@_friendly
def infra_create() -> None:
    """Create everything the control plane needs; safe to run again."""
    from chalicelib.aws.infra import create_infrastructure
    from chalicelib.settings import Settings

    settings = Settings.from_env()
    where = settings.endpoint_url or f"AWS {settings.region}"
    click.echo(f"creating Modelport infrastructure ({settings.stage}) on {where}", err=True)
    for name, value in create_infrastructure(settings).items():
        click.echo(f"{name}: {value}")


# --------------------------------------------------------------------------- images


class _BuildProgress:
    """Shows a build's progress lines: on a terminal a bar per ``Step N/M`` stream and a one-line status
    for the rest; otherwise (logs, CI) the steps and Modelport's own lines, one per line. ``verbose``
    shows every line of every step (pip's output, the engine's)."""

    _STEP = re.compile(r"^(?P<phase>[a-z]+): Step (?P<n>\d+)/(?P<m>\d+) : (?P<what>.*)$")

    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.key: tuple[str, int] | None = None
        self.status = False

    def __call__(self, line: str) -> None:
        step = self._STEP.match(line)
        if step is not None:
            phase, n, m = step.group("phase"), int(step.group("n")), int(step.group("m"))
            if not self.tty:
                click.echo(line, err=True)
                return
            self._clear_status()
            if self.key != (phase, m):
                self.close()
                self.bar = click.progressbar(
                    length=m, label=f"{phase} image", file=sys.stderr, show_pos=True, width=24
                )
                self.bar.__enter__()
                self.key = (phase, m)
            self.bar.label = f"{phase} image: {step.group('what')[:60]}"
            self.bar.update(n - self.bar.pos)
            return
        is_inner = bool(re.match(r"^[a-z]+: ", line)) and not line.startswith("push: ")
        if self.verbose:
            self._clear_status()
            self._echo(line)
        elif is_inner or line.startswith(("Collecting ", "push: ")):
            if self.tty and self.bar is None:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                click.echo("\r\x1b[K" + line[:width], nl=False, err=True)
                self.status = True
        else:
            self.close()
            self._echo(line)

    def _echo(self, line: str) -> None:
        if self.bar is not None:
            click.echo("", err=True)
        click.echo(line, err=True)

    def _clear_status(self) -> None:
        if self.status:
            click.echo("\r\x1b[K", nl=False, err=True)
            self.status = False

    def close(self) -> None:
        self._clear_status()
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
            self.key = None


@cli.command()
@model_dir_arg
@click.option(
    "--push",
    "registry",
    metavar="REGISTRY",
    default=None,
    help="push to this registry: host:port (e.g. 127.0.0.1:5000), an ECR registry host, or 'ecr'",
)
@click.option(
    "--base-image",
    metavar="IMAGE",
    default=None,
    help="base image instead of the config's (default: $MODELPORT_BASE_IMAGE, else the AWS Lambda image, "
    "else the local Debian base)",
)
@click.option("--version", "version", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--builder",
    type=click.Choice(["oci", "docker"]),
    default=None,
    help="oci: no docker engine, straight to the registry (the default with --push); docker: the engine",
)
@click.option("-v", "--verbose", is_flag=True, help="show every line of the build")
@_friendly
def build(
    model_dir: Path,
    registry: str | None,
    base_image: str | None,
    version: int,
    builder: str | None,
    verbose: bool,
) -> None:
    """Build the container image of the model in DIR (and push it with --push)."""
    from chalicelib.services.intake import config_file_for_dir
    from chalicelib.wiring import repository_host

    kind = builder or ("oci" if registry else "docker")
    if kind == "oci" and not registry:
        raise click.UsageError("the oci builder writes to a registry: give --push REGISTRY")
    doc = config_file_for_dir(model_dir, version=version, sandbox=_local_sandbox())
    progress = _BuildProgress(verbose=verbose)
    if kind == "oci":
        from chalicelib.oci.builder import OciImageBuilder

        assert registry is not None
        user, password = (
            os.environ.get("MODELPORT_REGISTRY_USER"),
            os.environ.get("MODELPORT_REGISTRY_PASSWORD"),
        )
        oci = OciImageBuilder(
            registry,
            base_image=base_image,
            repositories=repository_host(registry),
            credentials=(user, password) if user and password else None,
        )
        try:
            made = oci.build_image(doc, model_dir, progress)
        finally:
            progress.close()
        click.echo(made.reference)
        click.echo(f"size:        {made.association.size_bytes / 1e6:.0f} MB", err=True)
        click.echo(f"layers:      {made.layers} ({len(made.uploaded)} blobs uploaded)", err=True)
        click.echo(f"base:        {made.base_image}", err=True)
        click.echo(f"time:        {made.timings.get('total_s', 0.0):.1f} s", err=True)
        return
    from chalicelib.docker.builder import DockerImageBuilder

    docker_builder = DockerImageBuilder(
        registry=registry, base_image=base_image, repositories=repository_host(registry)
    )
    try:
        report = docker_builder.build_image(doc, model_dir, progress)
    finally:
        progress.close()
    built = report.association
    env_state = "built" if report.environment_built else "reused"
    click.echo(f"image:       {built.image_uri}")
    click.echo(f"digest:      {built.image_digest}")
    click.echo(f"size:        {built.size_bytes / 1e6:.0f} MB")
    click.echo(f"layers:      {report.layers}")
    env_mb = report.environment_size_bytes / 1e6
    click.echo(
        f"environment: {report.environment_image} ({env_state}, {env_mb:.0f} MB, {report.wheels} wheels)"
    )
    click.echo(f"base:        {report.base_image}")
    click.echo(f"time:        {report.timings.get('total_s', 0.0):.1f} s")


@cli.group("base-image")
def base_image_group() -> None:
    """The local Python base image (Debian, made with debootstrap) for machines without the AWS base."""


@base_image_group.command("build")
@click.option("--python", type=click.Choice(["3.11", "3.12", "3.13"]), default="3.11", show_default=True)
@click.option("--force", is_flag=True, help="rebuild even if the image exists")
@_friendly
def base_image_build(python: str, force: bool) -> None:
    """Make modelport/base:py<PYTHON>-<release>-r<N> (needs root and debootstrap); skipped when it exists."""
    from chalicelib.docker.baseimage import build_base_image

    click.echo(build_base_image(python, progress=lambda line: click.echo(line, err=True), force=force))


@base_image_group.command("push")
@click.argument("registry")
@click.option("--python", type=click.Choice(["3.11", "3.13"]), default="3.11", show_default=True)
@_friendly
def base_image_push(registry: str, python: str) -> None:
    """Put the local base (from the docker engine) into REGISTRY, for `modelport build --push` to build on."""
    from chalicelib.oci.base import ensure_local_base

    click.echo(ensure_local_base(registry, python, lambda line: click.echo(line, err=True)))


@cli.group()
def registry() -> None:
    """A local image registry on 127.0.0.1 (Debian's docker-registry, no auth)."""


@registry.command("start")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@_friendly
def registry_start(port: int) -> None:
    """Start the registry (or find it running); prints its address for --push."""
    from chalicelib.docker.registry import start_registry

    click.echo(start_registry(port))


@registry.command("stop")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@_friendly
def registry_stop(port: int) -> None:
    """Stop the registry started by `modelport registry start`."""
    from chalicelib.docker.registry import stop_registry

    stopped = stop_registry(port)
    click.echo(
        f"stopped the registry on 127.0.0.1:{port}" if stopped else f"no registry of ours on port {port}"
    )


# --------------------------------------------------------------------------- the local stack


def _stack_home() -> Path:
    from chalicelib.local.stack import home

    return home()


def _running() -> Any:
    """The running local stack's state, or None."""
    from chalicelib.local.stack import StackState, pid_alive

    state = StackState.read(_stack_home())
    return state if state is not None and state.ready and pid_alive(state.pid) else None


def _show_stack(state: Any, verb: str) -> None:
    click.echo(f"local stack {verb} (pid {state.pid}): {state.launcher} environments ({state.launcher_note})")
    click.echo(f"  API           {state.api_url}")
    click.echo(f"  AWS endpoint  {state.endpoint_url}   (for boto3 / the aws CLI: AWS_ENDPOINT_URL)")
    click.echo(f"  registry      {state.registry or '- (process images)'}")
    click.echo(f"  data bucket   {state.data_bucket}   (inputs/<model>/... -> outputs/<model>/...)")
    click.echo(
        f"  deploy worker {'a container-image function' if state.worker == 'function' else state.worker}"
    )
    click.echo(f"  admin key     {state.admin_key}   (saved in {_stack_home() / 'stack.json'})")
    click.echo(f"  log           {state.log_file}")


def start_stack(edge_port: int, api_port: int, launcher: str, wait_s: float, worker: str = "auto") -> Any:
    """Start ``python -m chalicelib.local.stack`` in its own session and wait until it is ready."""
    import subprocess
    import time

    from chalicelib.local.stack import StackState, pid_alive

    home = _stack_home()
    home.mkdir(parents=True, exist_ok=True)
    log_file = home / "stack.log"
    with log_file.open("wb") as log:
        child = subprocess.Popen(
            [
                sys.executable, "-m", "chalicelib.local.stack", "--edge-port", str(edge_port),
                "--api-port", str(api_port), "--launcher", launcher, "--home", str(home),
                "--log-file", str(log_file), "--worker", worker,
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = StackState.read(home)
        if state is not None and state.pid == child.pid and state.ready:
            return state
        if child.poll() is not None or not pid_alive(child.pid):
            tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
            errors = [line for line in tail if line.startswith("error: ")]
            raise ModelportError(
                (errors[-1].removeprefix("error: ") if errors else "the local stack exited while starting"),
                hint=f"see {log_file}",
            )
        time.sleep(0.2)
    child.terminate()
    raise ModelportError(f"the local stack did not start within {wait_s:.0f} s", hint=f"see {log_file}")


def stop_stack() -> bool:
    """Stop the running local stack by its PID; False when none runs."""
    import signal
    import time

    from chalicelib.local.stack import STATE_FILE, StackState, pid_alive

    home = _stack_home()
    state = StackState.read(home)
    if state is None or not pid_alive(state.pid):
        (home / STATE_FILE).unlink(missing_ok=True)
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(state.pid):
        os.kill(state.pid, signal.SIGKILL)
    (home / STATE_FILE).unlink(missing_ok=True)
    return True


stack_options = [
    click.option("--edge-port", type=click.IntRange(1, 65535), default=4566, show_default=True,
                 help="the AWS endpoint (moto + the Lambda emulator)"),
    click.option("--api-port", type=click.IntRange(1, 65535), default=8000, show_default=True,
                 help="the Modelport API"),
    click.option("--launcher", type=click.Choice(["auto", "container", "process"]), default="auto",
                 show_default=True, help="execution environments: containers need a docker engine"),
    click.option("--worker", type=click.Choice(["auto", "in-process", "function"]), default="auto",
                 show_default=True, help="the deploy worker: a container-image function (auto, on an "
                 "engine with the registry) or in the stack's process"),
]  # fmt: skip


def _with_stack_options(func: F) -> F:
    for option in reversed(stack_options):
        func = option(func)
    return func


@cli.command()
@_with_stack_options
@click.option("--wait", "wait_s", type=click.FloatRange(1, 3600), default=180, show_default=True)
@_friendly
def up(edge_port: int, api_port: int, launcher: str, worker: str, wait_s: float) -> None:
    """Start the local stack in the background: AWS endpoint, Lambda emulator, API, event pump."""
    state = _running()
    if state is not None:
        _show_stack(state, "is already running")
        return
    click.echo("starting the local stack ...", err=True)
    _show_stack(start_stack(edge_port, api_port, launcher, wait_s, worker), "up")
    click.echo(
        "state lives in memory: `modelport down` forgets every model (built images and wheels stay cached)"
    )


@cli.command()
@_friendly
def down() -> None:
    """Stop the local stack started by `modelport up` (its containers too)."""
    click.echo("stopped the local stack" if stop_stack() else "no local stack is running")


# --------------------------------------------------------------------------- deploy, invoke, logs


def _connection() -> Any:
    """The API the environment names, else the running local stack's."""
    from chalicelib.client import Connection, connection

    state = _running()
    local = None if state is None else Connection(state.api_url, state.admin_key, state.endpoint_url)
    return connection(local=local)


def _client() -> Any:
    from chalicelib.client import Client

    return Client(_connection())


def _checked_name(model_dir: Path) -> str:
    """The model's name, after inspecting DIR here so a mistake costs no upload (a pickle is opened only
    by the deployment's sandbox: its name is read from modelport.yaml)."""
    from chalicelib.core.errors import SandboxUnavailable
    from chalicelib.services.intake import config_file_for_dir, load_config

    try:
        return config_file_for_dir(model_dir).name
    except SandboxUnavailable:
        return load_config(model_dir).name


class _Ticker:
    """On a terminal, one line that shows what a long wait is at; elsewhere nothing."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False

    def line(self, text: str) -> None:
        self.clear()
        click.echo(text, err=True)

    def tick(self, text: str) -> None:
        if self.tty:
            click.echo("\r\x1b[K" + text, nl=False, err=True)
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            click.echo("\r\x1b[K", nl=False, err=True)
            self.shown = False


@cli.command("deploy")
@model_dir_arg
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 7200), default=1800, show_default=True)
@_friendly
def deploy_cmd(model_dir: Path, timeout_s: float) -> None:
    """Upload DIR as a new version and follow its deployment to READY (or the reason it failed)."""
    from chalicelib.client import deploy

    client = _client()
    name = _checked_name(model_dir)
    ticker = _Ticker()
    try:
        outcome = deploy(
            client, model_dir, name=name, progress=ticker.line, tick=ticker.tick, timeout_s=timeout_s
        )
    finally:
        ticker.clear()
    if outcome.status != "READY":
        click.echo(f"error: {outcome.name} v{outcome.version} {outcome.status}: {outcome.reason}", err=True)
        sys.exit(1)
    config = outcome.config or {}
    container = config.get("container") or {}
    deployment = config.get("deployment") or {}
    click.echo(f"{outcome.name} v{outcome.version} READY in {outcome.seconds:.1f} s")
    click.echo(f"  image      {container.get('image_uri', '-')} ({container.get('image_digest', '-')[:19]})")
    functions = ", ".join(
        f"{f['function_name']}:{f.get('version') or '$LATEST'}" for f in deployment.get("functions", [])
    )
    click.echo(f"  functions  {functions} ({deployment.get('mode', '-')})")
    click.echo(f"  invoke     POST {client.conn.api_url}/v1/models/{outcome.name}/invoke")


CONTENT_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".csv": "text/csv", ".json": "application/json",
}  # fmt: skip


@cli.command("invoke")
@click.argument("name")
@click.option("--json", "json_text", metavar="JSON", default=None, help="the request body, JSON")
@click.option("--file", "file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="the request body from a file (.json, .csv, .png, .jpg, .webp)")  # fmt: skip
@click.option("--content-type", default=None, help="the body's media type (default: from --file's name)")
@click.option("--accept", default=None, help="the answer's media type (default: image/png for --out *.png)")
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="default: the default")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="save the answer")
@click.option(
    "--async", "run_async", is_flag=True, help="run it as a job (Prefer: respond-async) and follow it"
)
@click.option("--webhook", metavar="URL", help="with --async: where the job's completion is POSTed")
@_friendly
def invoke_cmd(
    name: str, json_text: str | None, file: Path | None, content_type: str | None, accept: str | None,
    version: int | None, out: Path | None, run_async: bool, webhook: str | None,
) -> None:  # fmt: skip
    """Invoke model NAME with a request body; print the answer (or save it with --out)."""
    import time

    from chalicelib.client import invoke

    if (json_text is None) == (file is None):
        raise click.UsageError("give the request as --json '{...}' or --file PATH (one of them)")
    if file is not None:
        body = file.read_bytes()
        media = content_type or CONTENT_TYPES.get(file.suffix.lower())
        if media is None:
            raise click.UsageError(f"cannot tell the media type of {file.name}: add --content-type")
    else:
        assert json_text is not None
        body, media = json_text.encode(), content_type or "application/json"
    if accept is None and out is not None and out.suffix.lower() == ".png":
        accept = "image/png"
    began = time.perf_counter()
    client = _client()
    answer = invoke(
        client, name, body, content_type=media, accept=accept, version=version, respond_async=run_async,
        webhook=webhook if run_async else None,
    )  # fmt: skip
    if answer.status == 202:  # asked for, or a call that may outlive the API's 29 s and did not end in time
        from chalicelib.cli_jobs import follow_and_show

        why = "queued" if run_async else "still running at the API's deadline"
        click.echo(f"202 job {answer.json()['job_id']} {why}", err=True)
        follow_and_show(client, answer.headers["location"], out)
        return
    ms = (time.perf_counter() - began) * 1000
    kind = answer.headers.get("content-type", "")
    timing = answer.headers.get("server-timing", "")
    stages = ", ".join(
        f"{m.split(';')[0].strip()} {m.split('dur=')[1]} ms"
        for m in timing.split(",")
        if "dur=" in m and "." not in m.split(";")[0]
    )
    click.echo(
        f"{answer.status} {kind} in {ms:.1f} ms" + (f" (model service: {stages})" if stages else ""), err=True
    )
    if out is not None:
        out.write_bytes(answer.body)
        click.echo(f"wrote {out} ({len(answer.body)} bytes)", err=True)
    elif kind.startswith("application/json"):
        click.echo(json.dumps(answer.json(), indent=2))
    elif kind.startswith("text/"):
        click.echo(answer.body.decode(errors="replace"))
    else:
        raise click.UsageError(f"the answer is {kind}: save it with --out FILE")


@cli.command("logs")
@click.argument("name")
@click.option("--since", "since_min", type=click.FloatRange(min=0), default=60, show_default=True,
              help="minutes back")  # fmt: skip
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines")
@click.option("--api", "with_api", is_flag=True, help="the local API's lines too (/aws/lambda/modelport_api)")
@click.option("--trace", "trace_id", default=None, help="only lines of this trace id (1-xxxxxxxx-24 hex)")
@_friendly
def logs_cmd(name: str, since_min: float, follow: bool, with_api: bool, trace_id: str | None) -> None:
    """Print the log lines of model NAME's functions (CloudWatch Logs, /aws/lambda/<function>).

    Shared pre/post stage functions serve other models too: their lines are all shown. ``--trace``: the
    lines of one request (its ``X-Amzn-Trace-Id`` root, docs/observability.md)."""
    import time
    from datetime import UTC, datetime

    import boto3

    from chalicelib.client import Client, function_names, log_lines
    from chalicelib.core.trace import valid_trace_id
    from chalicelib.local.stack import API_FUNCTION, LOCAL_CREDENTIALS

    if trace_id is not None and valid_trace_id(trace_id.removeprefix("Root=")) is None:
        raise click.BadParameter("expected an X-Ray trace id, 1-<8 hex>-<24 hex>", param_hint="--trace")
    wanted = trace_id.removeprefix("Root=") if trace_id is not None else None
    conn = _connection()
    functions = function_names(Client(conn), name) + ((API_FUNCTION,) if with_api else ())
    options: dict[str, Any] = {"endpoint_url": conn.endpoint_url}
    if conn.endpoint_url is not None:  # the local stack: send no real credentials there
        options.update(LOCAL_CREDENTIALS, region_name="us-east-1")
    logs = boto3.client("logs", **options)
    since_ms = int((time.time() - since_min * 60) * 1000)
    shown = False
    try:
        for function, at, line in log_lines(logs, functions, since_ms=since_ms, follow=follow):
            if wanted is not None and wanted not in line:
                continue
            stamp = datetime.fromtimestamp(at / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
            click.echo(f"{stamp} {function}  {line}")
            shown = True
    except KeyboardInterrupt:
        return
    if not shown:
        click.echo(f"no log lines of {name}'s functions in the last {since_min:g} minutes", err=True)


# --------------------------------------------------------------------------- the demo


@cli.command()
@click.argument(
    "model_dirs", nargs=-1, type=click.Path(file_okay=False, exists=True, path_type=Path), metavar="[DIR]..."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True
)
@click.option("--keep", is_flag=True, help="leave the local stack running afterwards")
@_with_stack_options
@_friendly
def demo(
    model_dirs: tuple[Path, ...],
    out: Path,
    keep: bool,
    edge_port: int,
    api_port: int,
    launcher: str,
    worker: str,
) -> None:
    """Start the local stack, deploy every example, invoke each with its samples, save the answers.

    Without DIR, every folder under examples/ with a modelport.yaml. Pictures are saved as
    OUT/<model>/<sample>.png, other answers as .json; a summary table ends it.
    """
    from chalicelib.client import Client
    from chalicelib.demo import run_demo, summary_lines

    dirs = list(model_dirs) or sorted(p.parent for p in Path("examples").glob("*/modelport.yaml"))
    if not dirs:
        raise click.UsageError("no model directories given and no examples/*/modelport.yaml here")
    state = _running()
    started = state is None
    if started:
        click.echo("starting the local stack ...", err=True)
        state = start_stack(edge_port, api_port, launcher, 600, worker)
        _show_stack(state, "up")
    else:
        _show_stack(state, "is running")
    try:
        from chalicelib.cli_jobs import data_bucket
        from chalicelib.cli_local import share_with_stack

        share_with_stack(state, dirs, lambda line: click.echo(f"wheels: {line}", err=True))
        client = Client(_connection())
        rows = run_demo(
            client, dirs, out, progress=lambda line: click.echo(line, err=True), data=data_bucket(None)
        )
    finally:
        if started and not keep:
            stop_stack()
            click.echo("stopped the local stack (--keep leaves it running)", err=True)
    click.echo(f"\n{state.launcher} environments ({state.launcher_note}); answers in {out}/")
    for line in summary_lines(rows):
        click.echo(line)
    if not all(row.ok for row in rows):
        sys.exit(1)


from chalicelib.cli_aws import aws_group  # noqa: E402 - below _friendly, which their commands get
from chalicelib.cli_jobs import batch_command, batches_command, jobs_command, usage_command  # noqa: E402
from chalicelib.cli_local import console_command, wheels_command  # noqa: E402

_added = (wheels_command, jobs_command, batch_command, batches_command, usage_command, console_command)
for _command in (*aws_group.commands.values(), *_added):
    assert _command.callback is not None
    _command.callback = _friendly(_command.callback)
for _group in (aws_group, *_added):
    cli.add_command(_group)


def main() -> None:
    if os.environ.get("MODELPORT_DEBUG"):
        cli()
        return
    try:
        cli()
    except Exception as exc:  # a bug, not a user's mistake: say so in one line
        click.echo(f"internal error: {type(exc).__name__}: {exc} (MODELPORT_DEBUG=1 shows more)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
