"""``modelport wheels``: the host's share of the local stack's wheel cache (chalicelib.local.wheels).

``chalicelib.cli`` adds the command and gives it the CLI's one-line errors (``_friendly``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from chalicelib.core.ports import Progress


@click.command("wheels")
@click.argument(
    "model_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
    metavar="DIR...",
)  # fmt: skip
def wheels_command(model_dirs: tuple[Path, ...]) -> None:
    """Resolve on this machine the wheels the images of DIR... need and share them with the running local
    stack, whose deploy worker (a container-image function) reaches no package index here."""
    from chalicelib.core.errors import ModelportError
    from chalicelib.local.stack import StackState, home, pid_alive

    state = StackState.read(home())
    if state is None or not state.ready or not pid_alive(state.pid):
        raise ModelportError("no local stack is running", hint="start it with `modelport up`")
    if not state.wheel_cache:
        click.echo(f"the stack's deploy worker runs {state.worker}: it resolves wheels on this machine")
        return
    outcome = share_with_stack(state, list(model_dirs), lambda line: click.echo(line, err=True))
    for model_dir, problem in outcome.items():
        click.echo(f"{model_dir}: {problem or 'wheels shared with the local stack'}")


def stack_wheel_cache(endpoint_url: str, bucket: str, prefix: str) -> Any:
    """The running stack's wheel cache, reached at its AWS endpoint with the local credentials."""
    import boto3

    from chalicelib.aws.s3 import S3ArtifactStore
    from chalicelib.docker.wheel_cache import ArtifactWheelCache
    from chalicelib.local.stack import LOCAL_CREDENTIALS

    session = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS)
    return ArtifactWheelCache(
        S3ArtifactStore(bucket, session.client("s3", endpoint_url=endpoint_url)), prefix
    )


def share_with_stack(state: Any, model_dirs: Sequence[Path], progress: Progress) -> dict[Path, str | None]:
    """Resolve ``model_dirs``' wheelhouses here and share them with the running stack ``state`` (a
    ``StackState``) when its deploy worker is a function; nothing to do for an in-process worker."""
    if not state.wheel_cache or not state.registry:
        return {}
    bucket, _, prefix = str(state.wheel_cache).removeprefix("s3://").partition("/")
    cache = stack_wheel_cache(state.endpoint_url, bucket, prefix)
    from chalicelib.local.wheels import resolve_for_dirs, share_host_wheelhouses

    outcome = resolve_for_dirs(model_dirs, registry=state.registry, cache=cache, progress=progress)
    share_host_wheelhouses(cache, progress)  # those found on disk here, which the stack may lack
    return outcome


@click.command("console")
@click.option("--model", "model", metavar="NAME", default=None, help="open this model's invoke form")
@click.option("--no-browser", is_flag=True, help="only print the URL")
def console_command(model: str | None, no_browser: bool) -> None:
    """Print the web console's URL for the running local stack (or MODELPORT_API_URL with
    MODELPORT_API_KEY) and open it in a browser. The key travels in the URL's fragment, which the browser
    sends to no server; the page moves it into the tab's sessionStorage and out of the address bar."""
    import webbrowser

    from chalicelib.client import Connection, connection, console_url
    from chalicelib.local.stack import StackState, home, pid_alive

    state = StackState.read(home())
    running = state is not None and state.ready and pid_alive(state.pid)
    local = Connection(state.api_url, state.admin_key, state.endpoint_url) if state and running else None
    conn = connection(local=local)
    url = console_url(conn.api_url, conn.api_key, model=model)
    click.echo(url)
    if not no_browser and not webbrowser.open(url):
        click.echo("no browser to open here: open the URL above", err=True)
