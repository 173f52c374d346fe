"""``modelport jobs [ID]`` and the following of ``modelport invoke --async``: asynchronous invocations.

``chalicelib.cli`` adds the command and gives it the CLI's one-line errors (``_friendly``)."""

from __future__ import annotations

import base64
import itertools
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import click

SPINNER = "|/-\\"


def follow_and_show(client: Any, location: str, out: Path | None = None) -> dict[str, Any]:
    """Follow the job at ``location`` with a spinner on stderr, then show (or save) its answer."""
    from chalicelib.client import follow_job

    began = time.monotonic()
    spin = itertools.cycle(SPINNER)
    tty = sys.stderr.isatty()

    def progress(doc: dict[str, Any]) -> None:
        if tty:
            click.echo(
                f"\r{next(spin)} {doc['job_id']} {doc['status']} {time.monotonic() - began:5.1f} s",
                nl=False,
                err=True,
            )

    doc = follow_job(client, location, progress=progress)
    click.echo(
        ("\r" if tty else "") + f"{doc['job_id']} {doc['status']} in {time.monotonic() - began:.1f} s",
        err=True,
    )
    show(doc, out)
    return doc


def show(doc: dict[str, Any], out: Path | None) -> None:
    if doc.get("error"):
        click.echo(f"error: {doc['error']}", err=True)
    result = doc.get("result")
    if result is None:
        if out is None:
            click.echo(json.dumps(doc, indent=2))
        return
    data: bytes | None = None
    if "url" in result:
        with urllib.request.urlopen(result["url"], timeout=300) as answer:  # noqa: S310 - our presigned URL
            data = answer.read()
    elif "body_base64" in result:
        data = base64.b64decode(result["body_base64"])
    if out is not None:
        payload = data if data is not None else json.dumps(result.get("body")).encode()
        out.write_bytes(payload)
        click.echo(f"wrote {out} ({len(payload)} bytes)", err=True)
    elif data is not None and not str(result.get("content_type", "")).startswith(
        ("application/json", "text/")
    ):
        raise click.UsageError(f"the answer is {result.get('content_type')}: save it with --out FILE")
    else:
        body = result.get("body") if data is None else json.loads(data)
        click.echo(json.dumps(body, indent=2) if not isinstance(body, str) else body)


@click.command("jobs")
@click.argument("job_id", required=False)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="save the answer")
@click.option("--cancel", is_flag=True, help="cancel the queued job ID")
@click.option("--wait", is_flag=True, help="follow job ID until it is done")
def jobs_command(job_id: str | None, out: Path | None, cancel: bool, wait: bool) -> None:
    """This account's newest jobs, or job ID: its status and answer (--wait follows it, --cancel stops a
    queued one)."""
    client = click.get_current_context().find_root().obj["client"]()
    if job_id is None:
        for job in client.json("GET", "/v1/jobs")["jobs"]:
            click.echo(
                f"{job['job_id']}  {job['status']:<9}  {job['model']} v{job['version']}  {job['created_at']}"
            )
        return
    location = f"/v1/jobs/{job_id}"
    if cancel:
        click.echo(json.dumps(client.json("DELETE", location), indent=2))
    elif wait:
        follow_and_show(client, location, out)
    else:
        show(client.json("GET", location), out)
