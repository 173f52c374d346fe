"""``modelport jobs [ID]`` and the following of ``modelport invoke --async``: asynchronous invocations;
``modelport usage``: what this account's invocations used and cost; ``modelport batch NAME FILE``: an
event-driven batch run, and ``modelport batches NAME``: what became of the model's batch inputs.

``chalicelib.cli`` adds the command and gives it the CLI's one-line errors (``_friendly``)."""

from __future__ import annotations

import base64
import itertools
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
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


def usage_lines(doc: dict[str, Any]) -> list[str]:
    """``GET /v1/usage``'s document as a table: one line per model, then the total."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    head = f"{'model':<24} {'calls':>8} {'errors':>6} {'4xx':>5} {'refused':>7} {'billed ms':>10}"
    lines = [f"usage of {doc['account']} from {doc['from']} to {doc['to']} (UTC)", head + "  p50/p99 ms  USD"]
    for name, row in [*((m["model"], m) for m in doc["models"]), ("total", doc["total"])]:
        latency = row["latency_ms"]
        lines.append(
            f"{name:<24} {row['invocations']:>8} {row['errors']:>6} {row['client_errors']:>5} "
            f"{row['rejected']:>7} {row['billed_ms']:>10}  {ms(latency['p50'])}/{ms(latency['p99'])}  "
            f"{row['cost']['usd']}"
        )
    return lines


@click.command("usage")
@click.option("--model", default=None, help="one model only")
@click.option("--from", "first", default=None, metavar="YYYY-MM-DD", help="first day (default: 30 days ago)")
@click.option("--to", "last", default=None, metavar="YYYY-MM-DD", help="last day (default: today, UTC)")
@click.option("--account", default=None, help="another account's (an admin key only)")
@click.option("--json", "as_json", is_flag=True, help="the API's document, with each day")
def usage_command(
    model: str | None, first: str | None, last: str | None, account: str | None, as_json: bool
) -> None:
    """What this account's invocations used per model: calls, errors, billed ms, cost, p50/p99 latency."""
    from urllib.parse import urlencode

    client = click.get_current_context().find_root().obj["client"]()
    query = {k: v for k, v in (("model", model), ("from", first), ("to", last), ("account", account)) if v}
    doc = client.json("GET", "/v1/usage" + (f"?{urlencode(query)}" if query else ""))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for line in usage_lines(doc):
        click.echo(line)


def data_bucket(bucket: str | None) -> tuple[Any, str]:
    """(an S3 client, the data bucket): the running local stack's unless ``bucket`` names one (then the
    environment's AWS credentials and ``MODELPORT_ENDPOINT_URL``, if set)."""
    import os

    import boto3

    from chalicelib.core.errors import ModelportError
    from chalicelib.local.stack import LOCAL_CREDENTIALS, StackState, home, pid_alive

    if bucket is not None:
        return boto3.client("s3", endpoint_url=os.environ.get("MODELPORT_ENDPOINT_URL") or None), bucket
    state = StackState.read(home())
    if state is None or not state.ready or not pid_alive(state.pid) or not state.data_bucket:
        raise ModelportError(
            "no local stack is running", hint="start it with `modelport up`, or give --bucket"
        )
    session = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS)
    return session.client("s3", endpoint_url=state.endpoint_url), state.data_bucket


@dataclass(frozen=True)
class BatchRun:
    """What an event-driven batch run gave: its summary object, the JSONL's key and bytes."""

    summary: dict[str, Any]
    results_key: str
    results: bytes
    seconds: float


def run_batch(
    s3: Any,
    bucket: str,
    name: str,
    filename: str,
    data: bytes,
    *,
    wait_s: float = 600,
    tick: Callable[[float], None] = lambda elapsed: None,
) -> BatchRun:
    """Put ``data`` as inputs/NAME/FILENAME in the data bucket and wait for the summary of that very
    object (its ETag) beside outputs/NAME/<stem>.jsonl; ``tick`` is called while it waits."""
    from botocore.exceptions import ClientError

    from chalicelib.core.errors import InvalidRequest, ModelportError
    from chalicelib.services.batch import output_keys

    key = f"inputs/{name}/{filename}"
    keys = output_keys(key)
    if keys is None:
        raise InvalidRequest(f"{filename}: batch inputs are .csv, .jsonl, .png, .jpg or .webp files")
    _, results_key, summary_key = keys
    began = time.monotonic()
    etag = str(s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]).strip('"')
    while True:
        try:
            summary = json.loads(s3.get_object(Bucket=bucket, Key=summary_key)["Body"].read())
            if summary.get("etag") == etag:
                break
        except (ClientError, ValueError):
            pass
        if time.monotonic() - began > wait_s:
            raise ModelportError(f"no s3://{bucket}/{summary_key} after {wait_s:.0f} s")
        tick(time.monotonic() - began)
        time.sleep(0.1)
    if summary.get("output") is None:
        raise ModelportError(f"the batch failed: {summary.get('error')}")
    results = s3.get_object(Bucket=bucket, Key=results_key)["Body"].read()
    return BatchRun(summary, results_key, results, time.monotonic() - began)


@click.command("batch")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--bucket", default=None, help="the data bucket (default: the running local stack's)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="save the JSONL")
@click.option("--wait", "wait_s", type=click.FloatRange(1, 3600), default=600, show_default=True)
def batch_command(name: str, file: Path, bucket: str | None, out: Path | None, wait_s: float) -> None:
    """Infer FILE (.csv or .jsonl row by row, or an image) with model NAME, event-driven: upload it as
    inputs/NAME/FILE to the data bucket, wait for outputs/NAME/<FILE's stem>.jsonl, print or save it."""
    s3, bucket_name = data_bucket(bucket)
    click.echo(f"uploading s3://{bucket_name}/inputs/{name}/{file.name}", err=True)
    spin = itertools.cycle(SPINNER)
    tty = sys.stderr.isatty()

    def tick(elapsed: float) -> None:
        if tty:
            click.echo(f"\r{next(spin)} waiting for its output {elapsed:5.1f} s", nl=False, err=True)

    run = run_batch(s3, bucket_name, name, file.name, file.read_bytes(), wait_s=wait_s, tick=tick)
    summary = run.summary
    click.echo(
        ("\r" if tty else "")
        + f"{summary['rows']} rows: {summary['succeeded']} answered, {summary['failed']} failed, "
        + f"in {summary['seconds']} s -> s3://{bucket_name}/{run.results_key}"
        + (f"; error: {summary['error']}" if summary.get("error") else ""),
        err=True,
    )
    if out is not None:
        out.write_bytes(run.results)
        click.echo(f"wrote {out} ({len(run.results)} bytes)", err=True)
    else:
        click.echo(run.results.decode(), nl=False)


_COUNTS = ("rows", "succeeded", "failed", "seconds")


def batch_lines(doc: dict[str, Any]) -> list[str]:
    """``GET /v1/models/{name}/batches``'s document as a table, newest first; an error under its run."""
    if not doc["batches"]:
        return ["no batch runs: put a .csv or .jsonl under inputs/NAME/ of the data bucket (modelport batch)"]
    head = (
        f"{'input':<40} {'status':<9} {'rows':>7} {'ok':>7} {'failed':>6} {'seconds':>8} {'USD':>14}  updated"
    )
    lines = [head]
    for run in doc["batches"]:
        rows, ok, failed, seconds = ("-" if run.get(f) is None else str(run[f]) for f in _COUNTS)
        cost = (run.get("cost") or {}).get("usd") or "-"
        lines.append(
            f"{run['input']:<40} {run['status']:<9} {rows:>7} {ok:>7} {failed:>6} {seconds:>8} {cost:>14}  "
            f"{run['updated_at']}"
        )
        if run.get("error"):
            lines.append(f"  error: {run['error']}")
    return lines


@click.command("batches")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 100), default=50, show_default=True, help="newest N runs")
@click.option("--json", "as_json", is_flag=True, help="the API's document, with the download URLs")
def batches_command(name: str, limit: int, as_json: bool) -> None:
    """Model NAME's event-driven batch runs, newest first: each input under inputs/NAME/ of the data bucket
    with its status (PENDING, SUCCEEDED, PARTIAL, FAILED), rows, seconds and cost (owners only)."""
    from urllib.parse import quote

    client = click.get_current_context().find_root().obj["client"]()
    doc = client.json("GET", f"/v1/models/{quote(name, safe='')}/batches?limit={limit}")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for line in batch_lines(doc):
        click.echo(line)
