"""``modelport aws``: package, deploy and destroy a stage on an AWS account (README, "Deploy to AWS").

``chalicelib.cli`` adds this group and gives its commands the CLI's one-line errors (``_friendly``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


@click.group("aws")
def aws_group() -> None:
    """Deploy a stage to an AWS account with CloudFormation (see README, "Deploy to AWS")."""


stage_option = click.option("--stage", required=True, help="a stage of .chalice/config.json (dev, prod)")


@aws_group.command("package")
@stage_option
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path), metavar="OUT_DIR")
def aws_package(stage: str, out_dir: Path) -> None:
    """Write the stage's template and API package into OUT_DIR (no AWS calls)."""
    from chalicelib.aws.cloudformation import package

    made = package(stage, out_dir)
    click.echo(f"template:    {made.template}")
    click.echo(f"API package: {made.zip_path} ({made.zip_bytes / 2**20:.1f} MB, {made.seconds:.1f} s)")


def _push_worker_image(settings: Any, session: Any, registry: str, progress: Callable[[str], None]) -> str:
    """Build and push the deploy worker's image daemonlessly into the account's ECR."""
    from chalicelib.aws.ecr import EcrRegistry
    from chalicelib.oci.builder import OciImageBuilder  # type: ignore[import-not-found,unused-ignore]
    from chalicelib.worker.image import (  # type: ignore[import-not-found,unused-ignore]
        AWS_WORKER_PYTHON,
        build_worker_image,
        worker_recipe,
    )

    ecr = EcrRegistry(session.client("ecr", region_name=settings.region))
    recipe = worker_recipe(python=AWS_WORKER_PYTHON)
    return str(build_worker_image(OciImageBuilder(registry, repositories=ecr), progress, recipe))


@aws_group.command("deploy")
@stage_option
def aws_deploy(stage: str) -> None:
    """Build and push the deploy worker's image, then create or update the stage's stack."""
    from chalicelib.aws.cloudformation import deploy

    done = deploy(stage, lambda line: click.echo(line, err=True), worker_image=_push_worker_image)
    click.echo(f"stack:   {done.stack}")
    click.echo(f"API URL: {done.outputs.get('EndpointURL', '?')}")
    click.echo(f"admin key: in Secrets Manager, secret {done.outputs.get('AdminKeySecret', '?')}")


@aws_group.command("destroy")
@stage_option
@click.option("--delete-data", is_flag=True, help="also empty and delete the buckets (bundles, API packages)")
def aws_destroy(stage: str, delete_data: bool) -> None:
    """Delete the stage's stack; its buckets stay unless --delete-data."""
    from chalicelib.aws.cloudformation import destroy

    kept = destroy(stage, lambda line: click.echo(line, err=True), delete_data=delete_data)
    for bucket in kept:
        click.echo(f"kept bucket {bucket} (--delete-data removes it)")
