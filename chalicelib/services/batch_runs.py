"""What became of a model's event-driven batch inputs (``GET /v1/models/{name}/batches``), newest first.

Read from the data bucket alone: each input under ``inputs/<model>/`` and each summary under
``outputs/<model>/`` (``services/batch.py`` writes one last, with the input's ETag). An input whose summary is
missing or names another ETag is PENDING; a summary decides the rest. Only the owner (or an admin) sees them:
the batch ran as the owner on the owner's data, so anyone else gets the model's plain 404.

Whoever may write under ``inputs/`` may write a summary too, so summaries are hostile data: read with a
size cap, parsed and validated, a bad one shown as FAILED with the reason; the download URL is always of the
results key the input implies, never one a summary names. The S3 calls are bounded: two listings of at
most ``SCAN`` objects each, then at most ``limit`` summaries read.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chalicelib.core.errors import ConfigError, InvalidRequest, NotFound, TooLarge
from chalicelib.core.jsontext import JsonTextError, loads, short
from chalicelib.core.ports import ArtifactStore, ListedObject
from chalicelib.core.records import Account
from chalicelib.services.batch import INPUTS, OUTPUTS, output_keys
from chalicelib.services.models import ModelService

DEFAULT_LIMIT, MAX_LIMIT = 50, 100
SCAN = 1000
"""Objects listed per prefix (one S3 call each; ``outputs/`` holds two per run, so twice that there):
the newest are found among the first ``SCAN`` inputs by key."""
MAX_SUMMARY_BYTES = 64 * 1024
MAX_ERROR_CHARS = 1000
DOWNLOAD_EXPIRES_S = 900
SUMMARY_SUFFIX = ".summary.json"

Status = Literal["PENDING", "SUCCEEDED", "PARTIAL", "FAILED"]


class BatchCost(BaseModel):
    billed_ms: int = Field(ge=0)
    usd: str = Field(max_length=40)
    pico_usd: int = Field(ge=0)


class Summary(BaseModel):
    """The fields of a summary object this reads (``BatchService.handle_object`` writes them)."""

    model_config = ConfigDict(extra="ignore")
    input: str = Field(max_length=1024)
    etag: str = Field(max_length=200)
    rows: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    error: str | None
    seconds: float = Field(ge=0, allow_inf_nan=False)
    cost: BatchCost | None = None


class BatchRun(BaseModel):
    """One input's run, as the API answers it."""

    input: str
    status: Status
    rows: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    error: str | None = None
    seconds: float | None = None
    cost: BatchCost | None = None
    updated_at: str
    output: str | None = Field(default=None, description="the results' key (JSON Lines) once finished")
    download_url: str | None = Field(
        default=None, description=f"a presigned GET of the results, for {DOWNLOAD_EXPIRES_S} s"
    )


class BatchRunList(BaseModel):
    batches: list[BatchRun]


def parse_limit(value: str | None) -> int:
    """``?limit=``: 1..MAX_LIMIT in ASCII digits (``int()`` takes ``'٣'``), DEFAULT_LIMIT when absent."""
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit() and len(value) <= 3) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(
            f"limit must be an integer from 1 to {MAX_LIMIT}, got {short(value)}",
            errors=[{"pointer": "/limit", "message": f"not an integer from 1 to {MAX_LIMIT}"}],
        )
    return int(value)


@dataclass(frozen=True)
class _Candidate:
    """One run as the listings show it, before its summary is read."""

    summary_key: str
    input: ListedObject | None
    summary: ListedObject | None

    @property
    def updated_at(self) -> str:
        return max(o.last_modified for o in (self.input, self.summary) if o is not None)


class BatchRuns:
    def __init__(
        self, models: ModelService, data: ArtifactStore, *, download_expires_s: int = DOWNLOAD_EXPIRES_S
    ) -> None:
        self.models = models
        self.data = data
        self.download_expires_s = download_expires_s

    def for_model(self, caller: Account, name: str, *, limit: int = DEFAULT_LIMIT) -> BatchRunList:
        """The model's newest ``limit`` runs; the plain 404 for anyone but its owner and the admins."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be from 1 to {MAX_LIMIT}, got {limit}")
        self.models.owned_view(caller, name)
        chosen = sorted(self._candidates(name), key=lambda c: (c.updated_at, c.summary_key), reverse=True)
        return BatchRunList(batches=[run for c in chosen[:limit] if (run := self._run(name, c)) is not None])

    def _candidates(self, name: str) -> list[_Candidate]:
        summaries = {
            o.key: o
            for o in self.data.list_objects(f"{OUTPUTS}{name}/", limit=2 * SCAN)
            if o.key.endswith(SUMMARY_SUFFIX)
        }
        found: list[_Candidate] = []
        claimed: set[str] = set()
        for listed in self.data.list_objects(f"{INPUTS}{name}/", limit=SCAN):
            keys = output_keys(listed.key)
            if keys is None or keys[0] != name:
                continue  # not a batch input (batch.py ignores it too)
            found.append(_Candidate(keys[2], listed, summaries.get(keys[2])))
            claimed.add(keys[2])
        found.extend(_Candidate(k, None, o) for k, o in summaries.items() if k not in claimed)
        return found  # a summary whose input is gone (or beyond SCAN) still shows what ran

    def _run(self, name: str, c: _Candidate) -> BatchRun | None:
        """The run of one candidate, its summary read (once); None if that summary vanished meanwhile and
        no input is left either."""
        shown, when = (c.input.key if c.input is not None else c.summary_key), c.updated_at
        if c.summary is None:
            return BatchRun(input=shown, status="PENDING", updated_at=when)
        try:
            summary = self._summary(c.summary)
        except NotFound:
            return BatchRun(input=shown, status="PENDING", updated_at=when) if c.input else None
        except _BadSummary as bad:
            return BatchRun(input=shown, status="FAILED", error=str(bad), updated_at=when)
        if c.input is None:
            shown = summary.input  # the input is gone: the summary says which it was, checked below
        elif summary.input != c.input.key or summary.etag != c.input.etag:
            return BatchRun(input=shown, status="PENDING", updated_at=when)  # of an earlier object
        keys = output_keys(shown)
        if keys is None or keys[0] != name or keys[2] != c.summary_key:
            error = f"{c.summary_key} names an input that is not its own: {short(shown)}"
            return BatchRun(input=c.summary_key, status="FAILED", error=error, updated_at=when)
        status: Status = (
            "FAILED" if summary.error is not None else "PARTIAL" if summary.failed else "SUCCEEDED"
        )
        run = BatchRun(
            input=shown, status=status, rows=summary.rows, succeeded=summary.succeeded, failed=summary.failed,
            error=summary.error[:MAX_ERROR_CHARS] if summary.error is not None else None,
            seconds=summary.seconds, cost=summary.cost, updated_at=when,
        )  # fmt: skip
        if summary.error is None:  # the results the input implies, never a key the summary names
            url = self.data.presign_download(keys[1], expires_in=self.download_expires_s)
            run = run.model_copy(update={"output": keys[1], "download_url": url})
        return run

    def _summary(self, listed: ListedObject) -> Summary:
        """The summary object, read with a cap and validated; ``_BadSummary`` says what is wrong with it."""
        too_large = f"{listed.key} is over the {MAX_SUMMARY_BYTES} bytes a summary may be"
        if listed.size_bytes > MAX_SUMMARY_BYTES:
            raise _BadSummary(f"{too_large} ({listed.size_bytes} bytes)")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "summary.json"
            try:
                self.data.download(listed.key, path, max_bytes=MAX_SUMMARY_BYTES)
            except TooLarge:  # it grew since the listing
                raise _BadSummary(too_large) from None
            except ConfigError:  # a key S3 took but the store refuses (a control character)
                raise _BadSummary(f"{short(listed.key)} is a key this store does not read") from None
            raw = path.read_bytes()
        try:
            return Summary.model_validate(loads(raw))
        except JsonTextError as exc:
            raise _BadSummary(f"{listed.key} is not JSON: {exc.message}") from None
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = "/".join(str(p) for p in first["loc"]) or "the document"
            raise _BadSummary(f"{listed.key} is not a batch summary: {where}: {first['msg']}") from None
        except ValueError:  # bytes that are not UTF-8 (json.loads' UnicodeDecodeError)
            raise _BadSummary(f"{listed.key} is not JSON: not UTF-8 text") from None


class _BadSummary(Exception):
    """A summary object that cannot be believed: too large, not JSON, not of the summary's shape."""
