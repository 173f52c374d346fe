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
            sys.exit(USAGE_ERROR)
        except (OSError, MemoryError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


model_dir_arg = click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelport")
def cli() -> None:
    """Modelport: deploy trained models as serverless functions on AWS."""


@cli.command()
@model_dir_arg
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@_friendly
def inspect(model_dir: Path, fmt: str) -> None:
    """Show the framework and native inputs/outputs of the model in DIR."""
    from chalicelib.services.intake import inspect_dir

    _, native = inspect_dir(model_dir)
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
    from chalicelib.services.intake import manifest_for_dir

    doc = manifest_for_dir(model_dir, version=version)
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
    from chalicelib.services.intake import manifest_for_dir

    click.echo(json.dumps(openapi_document(manifest_for_dir(model_dir)), indent=2))


@cli.command()
@click.argument("which", type=click.Choice(["model-config", "modelport-yaml"]))
def schema(which: str) -> None:
    """Print a JSON Schema: the model config file's or modelport.yaml's."""
    from chalicelib.core.manifest import config_json_schema, manifest_json_schema, schema_text

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
    from chalicelib.wiring import Settings

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
@click.option("-v", "--verbose", is_flag=True, help="show every line of the build")
@_friendly
def build(model_dir: Path, registry: str | None, base_image: str | None, version: int, verbose: bool) -> None:
    """Build the container image of the model in DIR (and push it with --push)."""
    from chalicelib.docker.builder import DockerImageBuilder
    from chalicelib.services.intake import manifest_for_dir

    doc = manifest_for_dir(model_dir, version=version)
    builder = DockerImageBuilder(registry=registry, base_image=base_image)
    progress = _BuildProgress(verbose=verbose)
    try:
        report = builder.build_image(doc, model_dir, progress)
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
    """Make modelport/base:py<PYTHON>-<release> (needs root and debootstrap); skipped when it exists."""
    from chalicelib.docker.baseimage import build_base_image

    click.echo(build_base_image(python, progress=lambda line: click.echo(line, err=True), force=force))


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


@cli.command()
@click.argument(
    "model_dirs", nargs=-1, type=click.Path(file_okay=False, exists=True, path_type=Path), metavar="[DIR]..."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True
)
@_friendly
def demo(model_dirs: tuple[Path, ...], out: Path) -> None:
    """Render each example's visualization with the real runtime (in process) and save the PNGs.

    Without DIR, every folder under examples/ with a modelport.yaml. The full local-stack demo (deploy and
    invoke through the AWS APIs) grows from this.
    """
    from chalicelib.services.demo import demo_pictures

    dirs = model_dirs or tuple(sorted(p.parent for p in Path("examples").glob("*/modelport.yaml")))
    if not dirs:
        raise click.UsageError("no model directories given and no examples/*/modelport.yaml here")
    rows: list[tuple[str, str, str, str]] = []
    for model_dir in dirs:
        pictures = demo_pictures(model_dir, out)
        if not pictures:
            rows.append((model_dir.name, "-", "-", "no visualization in its protocol"))
        for picture in pictures:
            stages = ("decode_ms", "pre_ms", "model_ms", "post_ms", "encode_ms")
            total = sum(picture.timings.get(k, 0.0) for k in stages)
            where = str(picture.path) if picture.path else f"failed: {picture.problem}"
            rows.append((model_dir.name, picture.sample, f"{total:.1f}", where))
    widths = [max(len(r[i]) for r in [("model", "sample", "ms", "picture"), *rows]) for i in range(4)]
    for row in [("model", "sample", "ms", "picture"), *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


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
