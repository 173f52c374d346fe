"""``modelport demo``: deploy every example through the API, invoke each with its samples, save the answers.

Each model directory is deployed like a user would (``client.deploy``: bundle, presigned upload, the
deployment it starts), then every request in its ``samples/`` (PNG/JPEG/WebP images, CSV, JSON) of a
content type its protocol takes - or, without samples, the protocol's generated example - is sent to
``POST /v1/models/{name}/invoke``. A model whose response carries a picture is asked for ``image/png``
and the PNG saved as ``<out>/<model>/<sample>.png``; any other answer is saved as ``<sample>.json``.
The first call of a model is its cold start; ``warm_calls`` more of its first sample give the warm latency.
Then the first sample runs once more as an asynchronous job, and each file of the model's ``batch/``
folder (a CSV, JSON Lines or images) is put under ``inputs/<model>/`` in the data bucket - event-driven,
no API call - and its ``outputs/<model>/<stem>.jsonl`` saved as ``<out>/<model>/<stem>.jsonl``.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.client import ApiError, Client, DeployOutcome, deploy, follow_job, invoke
from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.protocol import Figure
from chalicelib.services.intake import config_file_for_dir

SAMPLE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".csv": "text/csv",
    ".json": "application/json",
}
MAX_SAMPLE_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    name: str
    content_type: str
    body: bytes


def samples_of(model_dir: Path, manifest: ModelConfigFile) -> list[Sample]:
    """The requests of ``model_dir/samples/`` its protocol takes; else the protocol's example request."""
    offered = manifest.protocol.request.content_types
    found = [
        Sample(p.stem, SAMPLE_TYPES[p.suffix.lower()], p.read_bytes())
        for p in sorted((model_dir / "samples").glob("*"))
        if p.is_file()
        and SAMPLE_TYPES.get(p.suffix.lower()) in offered
        and p.stat().st_size <= MAX_SAMPLE_BYTES
    ]
    if found:
        return found
    return [Sample("example", "application/json", json.dumps(manifest.protocol.request.example).encode())]


@dataclass
class Answer:
    sample: str
    status: int
    ms: float
    path: Path | None
    problem: str | None = None


@dataclass
class DemoRow:
    name: str
    deployed: DeployOutcome | None
    answers: list[Answer] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    problem: str | None = None
    job: str = "-"
    """How the first sample did as an asynchronous job ("SUCCEEDED in 0.4 s")."""
    batch: list[str] = field(default_factory=list)
    """How each file of ``batch/`` did, event-driven ("flowers.csv: 150/150 rows in 0.9 s")."""

    @property
    def mode(self) -> str:
        config = self.deployed.config if self.deployed else None
        return str(((config or {}).get("deployment") or {}).get("mode", "-"))

    @property
    def cold_ms(self) -> float | None:
        return self.answers[0].ms if self.answers else None

    @property
    def warm_p50_ms(self) -> float | None:
        return statistics.median(self.warm_ms) if self.warm_ms else None

    @property
    def ok(self) -> bool:
        answered = self.problem is None and all(a.problem is None for a in self.answers)
        batched = all("failed" not in line for line in self.batch)
        return answered and batched and (self.job == "-" or self.job.startswith("SUCCEEDED"))


def run_demo(
    client: Client,
    model_dirs: list[Path],
    out_dir: Path,
    *,
    progress: Callable[[str], None] = lambda line: None,
    warm_calls: int = 20,
    data: tuple[Any, str] | None = None,
) -> list[DemoRow]:
    """``data``: (an S3 client, the data bucket) for the event-driven batch runs; None skips them."""
    rows = []
    for model_dir in model_dirs:
        manifest = config_file_for_dir(model_dir)
        row = DemoRow(manifest.name, None)
        rows.append(row)
        progress(f"deploying {manifest.name}")
        try:
            row.deployed = deploy(
                client, model_dir, name=manifest.name, progress=lambda line: progress("  " + line)
            )
        except ApiError as exc:
            row.problem = f"deploy refused: {exc}"
            continue
        if row.deployed.status != "READY":
            row.problem = f"deployment {row.deployed.status}: {row.deployed.reason}"
            continue
        picture = isinstance(manifest.protocol.response_value, Figure)
        accept = "image/png" if picture else "application/json"
        target = out_dir / manifest.name
        target.mkdir(parents=True, exist_ok=True)
        samples = samples_of(model_dir, manifest)
        version = row.deployed.version  # on a running stack the default may be an older version
        for sample in samples:
            row.answers.append(_ask(client, manifest.name, version, sample, accept, target))
        progress(f"  {manifest.name}: {len(samples)} sample(s) answered, measuring {warm_calls} warm calls")
        first = samples[0]
        for _ in range(warm_calls):
            began = time.perf_counter()
            try:
                invoke(
                    client, manifest.name, first.body, content_type=first.content_type, accept=accept,
                    version=version,
                )  # fmt: skip
            except ApiError:
                break
            row.warm_ms.append((time.perf_counter() - began) * 1000)
        row.job = _job(client, manifest.name, version, first)
        progress(f"  {manifest.name}: an asynchronous job {row.job}")
        if data is not None:
            for path in sorted((model_dir / "batch").glob("[!.]*")):
                row.batch.append(_batch(data, manifest.name, path, target))
                progress(f"  {manifest.name}: event-driven batch {row.batch[-1]}")
    return rows


def _batch(data: tuple[Any, str], name: str, path: Path, target: Path) -> str:
    """``path`` put under inputs/NAME/, its JSONL saved in ``target``; "flowers.csv: 150/150 rows in 1 s"."""
    from botocore.exceptions import BotoCoreError, ClientError

    from chalicelib.cli_jobs import run_batch
    from chalicelib.core.errors import ModelportError

    try:
        run = run_batch(*data, name, path.name, path.read_bytes(), wait_s=300)
    except (ModelportError, ClientError, BotoCoreError) as exc:  # the summary says so; the demo goes on
        return f"{path.name}: failed: {exc}"
    (target / f"{path.stem}.jsonl").write_bytes(run.results)
    summary = run.summary
    failed = f", {summary['failed']} failed" if summary["failed"] else ""
    return f"{path.name}: {summary['succeeded']}/{summary['rows']} rows in {run.seconds:.1f} s{failed}"


def _job(client: Client, name: str, version: int, sample: Sample) -> str:
    """The first sample once more, as a job (202, then followed to its end): "SUCCEEDED in 0.4 s"."""
    began = time.perf_counter()
    try:
        answer = invoke(
            client, name, sample.body, content_type=sample.content_type, version=version, respond_async=True
        )
        doc = follow_job(client, answer.headers["location"], timeout_s=300)
    except (ApiError, KeyError) as exc:
        return f"failed: {exc}"
    return f"{doc['status']} in {time.perf_counter() - began:.1f} s"


def _ask(client: Client, name: str, version: int, sample: Sample, accept: str, target: Path) -> Answer:
    began = time.perf_counter()
    try:
        answer = invoke(
            client, name, sample.body, content_type=sample.content_type, accept=accept, version=version
        )
    except ApiError as exc:
        return Answer(sample.name, exc.status, (time.perf_counter() - began) * 1000, None, str(exc))
    ms = (time.perf_counter() - began) * 1000
    if answer.headers.get("content-type", "").startswith("image/png"):
        path = target / f"{sample.name}.png"
        path.write_bytes(answer.body)
    else:
        path = target / f"{sample.name}.json"
        path.write_text(json.dumps(answer.json(), indent=2) + "\n", encoding="utf-8")
    return Answer(sample.name, answer.status, ms, path)


def summary_lines(rows: list[DemoRow]) -> list[str]:
    """The demo's closing table, one line a model, columns aligned."""
    header = ("model", "mode", "deploy s", "cold ms", "warm p50 ms", "async job", "batch", "answers")
    table = [header]
    for row in rows:
        saved = ", ".join(str(a.path) if a.path else f"{a.sample}: {a.problem}" for a in row.answers)
        table.append((
            row.name,
            row.mode,
            f"{row.deployed.seconds:.1f}" if row.deployed else "-",
            f"{row.cold_ms:.1f}" if row.cold_ms is not None else "-",
            f"{row.warm_p50_ms:.1f}" if row.warm_p50_ms is not None else "-",
            row.job,
            "; ".join(row.batch) or "-",
            row.problem or saved,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in table]
