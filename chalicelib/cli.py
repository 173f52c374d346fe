"""The ``modelport`` command."""

from __future__ import annotations

import json
import os
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
