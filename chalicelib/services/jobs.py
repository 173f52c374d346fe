"""Asynchronous invocations: a job is checked like a call, queued, run by the job runner, read back.

``submit`` refuses what a synchronous call would refuse (grant, readiness, media types, sizes, schema)
before anything is stored, so a job that is QUEUED can run. The request is kept as an object
(``jobs/<id>/request``), the job record goes QUEUED, its id onto the jobs queue. ``run`` (the queue's
handler) takes the job RUNNING by a conditional write (a duplicate message or a cancel loses the race and
does nothing), invokes the model as its account, keeps the answer as ``jobs/<id>/result`` and ends the job
SUCCEEDED (the model answered 2xx) or FAILED (with the answer's error). A backing service that does not
answer is raised, so the queue redelivers. Jobs are per account: another account's job is a 404.

A job keeps the trace id of the request (or message) that made it (``Job.trace_id``): its run (its log
lines, its first webhook attempt) is observed under that id, and the model's invocation event carries it
(docs/observability.md).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from chalicelib.core import trace
from chalicelib.core.cost import usd
from chalicelib.core.errors import Conflict, InvalidRequest, ModelportError, NotFound, Unavailable
from chalicelib.core.jsontext import JsonTextError, loads
from chalicelib.core.ports import AccountStore, ArtifactStore, Clock, JobQueue, JobStore, ObjectInfo, Outbox
from chalicelib.core.records import JOB_DONE, JOB_TTL_S, Account, Job
from chalicelib.core.replies import COMPLETED, check_target
from chalicelib.core.wire import JSON, MAX_SYNC_PAYLOAD
from chalicelib.services import webhooks
from chalicelib.services.batch import BatchService
from chalicelib.services.invoke import InvokeResult, InvokeService

log = logging.getLogger("modelport.jobs")

INLINE_RESULT_BYTES = 256 * 1024
"""An answer up to this size is in ``GET /v1/jobs/{id}`` itself; a larger one is a presigned URL."""
RESULT_URL_S = 3600
JOB_ID_PREFIX = "job-"
INLINE_REQUEST_BYTES = 1024 * 1024
"""A job's request up to this size is sent in the event; a larger one by reference (``body_url``)."""
STALE_RUN_S = 960
"""A job RUNNING for longer than a function may run (900 s) lost its runner: a redelivery takes it over."""


@dataclass(frozen=True)
class JobView:
    """A job as its account sees it: the record and, once there is one, the answer."""

    job: Job
    result: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        j = self.job
        doc: dict[str, Any] = {
            "job_id": j.job_id,
            "model": j.model_name,
            "version": j.version,
            "status": j.status,
            "created_at": j.created_at,
            "started_at": j.started_at,
            "finished_at": j.finished_at,
            "trace_id": j.trace_id,
        }
        if j.error:
            doc["error"] = j.error
        if j.cost_pico_usd is not None:
            doc["cost"] = {"billed_ms": j.billed_ms, "usd": usd(j.cost_pico_usd), "pico_usd": j.cost_pico_usd}
        if j.webhook_url:
            doc["webhook"] = {
                "url": j.webhook_url,
                "status": j.webhook_status,
                "attempts": j.webhook_attempts,
            }
            if j.webhook_error:
                doc["webhook"]["error"] = j.webhook_error
        if self.result is not None:
            doc["result"] = self.result
        return doc


class JobService:
    def __init__(
        self,
        invoke: InvokeService,
        jobs: JobStore,
        accounts: AccountStore,
        artifacts: ArtifactStore,
        queue: JobQueue,
        clock: Clock,
        *,
        allow_loopback_webhooks: bool = False,
        batch: BatchService | None = None,
        outbox: Outbox | None = None,
        sync_wait_s: float = 25.0,
    ) -> None:
        """``allow_loopback_webhooks``: the local stack's, where a receiver on 127.0.0.1 is the user's own;
        ``sync_wait_s``: how long a synchronous call run as a job (``pipeline.longest_call_s``) is waited
        for before it is answered 202."""
        self.sync_wait_s = sync_wait_s
        self.allow_loopback = allow_loopback_webhooks
        self.outbox = outbox
        """Where a message-driven job's completion goes (its ``reply_to``)."""
        self.batch = batch
        """Where the data bucket's notifications (on the same queue) go: event-driven batch."""
        self.invoke = invoke
        self.jobs = jobs
        self.accounts = accounts
        self.artifacts = artifacts
        self.queue = queue
        self.clock = clock

    def submit(
        self,
        caller: Account,
        name: str,
        version: int | None,
        *,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        webhook_url: str | None = None,
        input_url: str | None = None,
        reply_to: str | None = None,
        message_id: str | None = None,
        trace_id: str | None = None,
    ) -> Job:
        """``input_url``: the request is an upload of the caller's (``POST /v1/uploads``), not ``body``;
        ``message_id``: the queue message it comes from, whose job it is once (a duplicate is a Conflict);
        ``reply_to``: where its completion goes; ``trace_id``: the trace the job's run joins (a well-formed
        id only), else the one being observed (the accepting request's), else a new one."""
        if webhook_url is not None:
            webhooks.check_url(webhook_url, allow_loopback=self.allow_loopback)
        if reply_to is not None:
            check_target(reply_to)
        reference = None
        if input_url is not None:
            if self.invoke.payloads is None:
                raise InvalidRequest("this deployment takes no inputs by reference (input_url)")
            if body:
                raise InvalidRequest("send either a body or an input_url, not both")
            reference = self.invoke.payloads.resolve(caller, input_url)
        manifest, _ = self.invoke.prepare(
            caller, name, version, body=body, content_type=content_type, accept=accept, reference=reference
        )
        job_id = JOB_ID_PREFIX + (
            secrets.token_hex(12)
            if message_id is None
            else "m" + hashlib.sha256(message_id.encode()).hexdigest()[:23]
        )
        if message_id is not None and self._exists(job_id):  # before the request is stored again
            raise Conflict(f"message {message_id[:100]} was taken already (job {job_id})")
        now = self.clock()
        if reference is None:
            key, size = f"jobs/{job_id}/request", len(body)
            self.artifacts.put(key, body)
        else:
            key, size = reference.key, reference.size_bytes
        job = Job(
            job_id=job_id,
            account_id=caller.account_id,
            model_name=manifest.name,
            version=manifest.version,
            status="QUEUED",
            input_key=key,
            input_bytes=size,
            content_type=content_type or JSON,
            accept=accept or "*/*",
            created_at=now,
            expires_at=_epoch(now) + JOB_TTL_S,
            webhook_url=webhook_url,
            webhook_status="PENDING" if webhook_url else None,
            reply_to=reply_to,
            message_id=message_id,
            trace_id=trace.valid_trace_id(trace_id) or trace.current_trace_id(),
        )
        if not self.jobs.create(job):  # 96 random bits, or a message's id seen twice
            raise Conflict(f"job {job_id} exists")
        self.queue.send(job_id)
        return job

    def _exists(self, job_id: str) -> bool:
        try:
            self.jobs.get(job_id)
        except NotFound:
            return False
        return True

    def get(self, caller: Account, job_id: str) -> JobView:
        return self._view(self._visible(caller, job_id))

    def _view(self, job: Job) -> JobView:
        if job.result_key is None:
            return JobView(job)
        info = self.artifacts.head(job.result_key)
        result: dict[str, Any] = {"status": job.result_status, "content_type": job.result_type}
        if info.size_bytes > INLINE_RESULT_BYTES:
            result["url"] = self.artifacts.presign_download(job.result_key, expires_in=RESULT_URL_S)
            result["size_bytes"] = info.size_bytes
            return JobView(job, result)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "result"
            self.artifacts.download(job.result_key, path, max_bytes=INLINE_RESULT_BYTES)
            data = path.read_bytes()
        parsed = _json_or_none(data) if (job.result_type or "").startswith(JSON) else None
        if parsed is not None:
            result["body"] = parsed
        elif (job.result_type or "").startswith("text/"):
            result["body"] = data.decode("utf-8", errors="replace")
        else:
            result["body_base64"] = base64.b64encode(data).decode()
        return JobView(job, result)

    def wait(
        self,
        caller: Account,
        job_id: str,
        *,
        until: float,
        poll_s: float = 0.05,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Job:
        """The job once it is done, or as it is at ``until`` (on the ``now`` clock)."""
        job = self._visible(caller, job_id)
        wait_s = poll_s
        while job.status not in JOB_DONE and now() < until:
            sleep(min(wait_s, max(until - now(), 0.0)))
            wait_s = min(wait_s * 1.5, 1.0)  # most calls end in the first few polls: back off after them
            with contextlib.suppress(Unavailable):  # the store blinked: the job is still there to follow
                job = self._visible(caller, job_id)
        return job

    def answer(self, job: Job) -> InvokeResult | None:
        """A finished job's answer as a synchronous call gives it: inline up to what a response carries,
        else a presigned URL; None while there is none."""
        if job.result_key is None or job.result_status is None:
            return None
        content_type = job.result_type or "application/octet-stream"
        info = self.artifacts.head(job.result_key)
        headers: dict[str, str] = {}
        if job.cost_pico_usd is not None:
            headers["Server-Timing"] = f'billed;dur={job.billed_ms}, cost;desc="{usd(job.cost_pico_usd)}"'
        textual = content_type.startswith((JSON, "text/"))
        if info.size_bytes > (MAX_SYNC_PAYLOAD if textual else MAX_SYNC_PAYLOAD * 3 // 4):  # base64 grows 4/3
            url = self.artifacts.presign_download(job.result_key, expires_in=RESULT_URL_S)
            return InvokeResult(
                job.result_status, content_type, b"", headers, job.result_key, url, info.size_bytes
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "result"
            self.artifacts.download(job.result_key, path, max_bytes=MAX_SYNC_PAYLOAD)
            return InvokeResult(job.result_status, content_type, path.read_bytes(), headers)

    def list(self, caller: Account, *, limit: int = 50) -> list[Job]:
        return self.jobs.list_for_account(caller.account_id, limit=limit)

    def cancel(self, caller: Account, job_id: str) -> Job:
        job = self._visible(caller, job_id)
        if job.status != "QUEUED":
            raise Conflict(f"job {job_id} is {job.status}: only a queued job can be cancelled")
        try:
            return self.jobs.save(job.model_copy(update={"status": "CANCELLED", "finished_at": self.clock()}))
        except Conflict:
            raise Conflict(f"job {job_id} started meanwhile: it can no longer be cancelled") from None

    def handle_message(self, body: str) -> Job | None:
        """A jobs-queue message: ``{"job_id": ...}`` (a job, or its webhook's next attempt), or the data
        bucket's S3 notification (a batch input); a malformed one is logged and dropped."""
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and ("Records" in doc or doc.get("Event") == "s3:TestEvent"):
            if self.batch is not None:
                self.batch.handle_message(body)
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("job_id"), str):
            log.warning("dropping a jobs-queue message that names no job: %.200r", body)
            return None
        attempt = doc.get("webhook_attempt")
        if type(attempt) is int and attempt > 0:
            return self.notify(doc["job_id"], attempt)
        return self.run(doc["job_id"])

    def _traced(self, job: Job) -> contextlib.AbstractContextManager[trace.Observation]:
        """Observe what is done for ``job`` under its trace id (a job from before trace ids: a new one)."""
        return trace.observing(job.trace_id or trace.mint_trace_id())

    def webhook_secret(self, caller: Account) -> str:
        """The caller's signing secret for job webhooks (made on the first ask)."""
        return self.accounts.webhook_secret(caller.account_id, webhooks.new_secret())

    def notify(self, job_id: str, attempt: int = 1) -> Job | None:
        """Send a done job's webhook (attempt ``attempt``, 1-based); on failure queue the next, with backoff,
        until ``RETRY_DELAYS_S`` is spent. At least once: a receiver de-duplicates by ``webhook-id``."""
        try:
            job = self.jobs.get(job_id)
        except NotFound:
            return None
        if job.webhook_url is None or job.webhook_status != "PENDING" or job.webhook_attempts >= attempt:
            return None  # none asked for, done already, or this attempt ran (a duplicate message)
        body = json.dumps(
            {"type": "job.completed", "timestamp": self.clock(), "data": self._view(job).document()}
        )
        secret = self.accounts.webhook_secret(job.account_id, webhooks.new_secret())
        headers = webhooks.signed_headers(secret, job.job_id, body)
        refused = False
        try:
            status = webhooks.send(job.webhook_url, body, headers, allow_loopback=self.allow_loopback)
            error = None if 200 <= status < 300 else f"the receiver answered {status}"
        except webhooks.WebhookRefused as exc:
            refused, error = True, str(exc)
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        final = error is None or refused or attempt > len(webhooks.RETRY_DELAYS_S)
        update: dict[str, Any] = {"webhook_attempts": attempt, "webhook_error": error}
        if error is None:
            update["webhook_status"] = "DELIVERED"
        elif final:
            update["webhook_status"] = "FAILED"
        try:
            saved = self.jobs.save(job.model_copy(update=update))
        except Conflict:
            return None  # another attempt recorded itself meanwhile
        if not final:
            self.queue.send(
                job.job_id, webhook_attempt=attempt + 1, delay_s=webhooks.RETRY_DELAYS_S[attempt - 1]
            )
        return saved

    def run(self, job_id: str) -> Job | None:
        """Run a queued job (the jobs queue's handler); None when there is nothing to do."""
        try:
            job = self.jobs.get(job_id)
        except NotFound:
            log.warning("dropping a message for an unknown job %.80s", job_id)
            return None
        now = self.clock()
        stale = job.status == "RUNNING" and _epoch(now) - _epoch(job.started_at or now) > STALE_RUN_S
        if job.status != "QUEUED" and not stale:
            return None  # a duplicate delivery, or cancelled, or done
        with self._traced(job):
            return self._take(job, now)

    def _take(self, job: Job, now: str) -> Job | None:
        """Take the job RUNNING and run it (observed under its trace id)."""
        try:
            job = self.jobs.save(job.model_copy(update={"status": "RUNNING", "started_at": now}))
        except Conflict:
            return None  # another delivery took it, or a cancel won
        try:
            return self._run(job)
        except Unavailable:
            # An outage: queued again for the redelivery (if the store answers; else it is stale in 16 min).
            with contextlib.suppress(ModelportError):
                self.jobs.save(job.model_copy(update={"status": "QUEUED", "started_at": None}))
            raise
        except ModelportError as exc:
            # The refusal is the job's answer, with its status: a client's mistake found only now (an
            # upload that is not what the protocol takes) stays a 4xx, a timeout a 504.
            key = f"jobs/{job.job_id}/result"
            with contextlib.suppress(ModelportError):
                self.artifacts.put(key, json.dumps(exc.to_dict()).encode())
                return self._end(
                    job,
                    "FAILED",
                    error=str(exc),
                    result_key=key,
                    result_type=JSON,
                    result_status=exc.http_status,
                )
            return self._end(job, "FAILED", error=str(exc))

    def _run(self, job: Job) -> Job:
        account = self.accounts.get_account(job.account_id)
        key = f"jobs/{job.job_id}/result"
        body, reference = b"", None
        if job.input_bytes is not None and job.input_bytes > INLINE_REQUEST_BYTES:
            reference = ObjectInfo(key=job.input_key, size_bytes=job.input_bytes, etag="")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "request"
                self.artifacts.download(job.input_key, path, max_bytes=MAX_SYNC_PAYLOAD)
                body = path.read_bytes()
        result = self.invoke.invoke(
            account,
            job.model_name,
            job.version,
            body=body,
            content_type=job.content_type,
            accept=job.accept,
            reference=reference,
            answer_key=key if self.invoke.payloads is not None else None,
        )
        if result.stored_key is None:
            self.artifacts.put(key, result.body)
        update: dict[str, Any] = {
            "result_key": key,
            "result_type": result.content_type,
            "result_status": result.status,
        }
        if result.bill is not None:
            update.update(billed_ms=result.bill.billed_ms, cost_pico_usd=result.bill.cost_pp)
        if result.status < 400:
            return self._end(job, "SUCCEEDED", **update)
        return self._end(job, "FAILED", error=_error_of(result.body), **update)

    def _end(self, job: Job, status: str, **update: Any) -> Job:
        ended = self.jobs.save(
            job.model_copy(update={"status": status, "finished_at": self.clock(), **update})
        )
        if ended.reply_to is not None and self.outbox is not None:
            try:
                self.outbox.reply(ended.reply_to, COMPLETED, self._view(ended).document())
            except ModelportError:  # the job stands (GET /v1/jobs/{id}); its reply is lost, and logged
                log.warning(
                    "job %s: its reply to %s could not be sent", ended.job_id, ended.reply_to, exc_info=True
                )
        if ended.webhook_url is not None:
            try:
                return self.notify(ended.job_id, 1) or ended
            except ModelportError:  # the store did not answer: the job stands, its webhook goes unsent
                log.warning("job %s: its webhook could not be sent", ended.job_id, exc_info=True)
        return ended

    def _visible(self, caller: Account, job_id: str) -> Job:
        if not job_id.startswith(JOB_ID_PREFIX) or len(job_id) > 64:
            raise NotFound(f"no job {job_id[:64]!r}")
        try:
            job = self.jobs.get(job_id)
        except NotFound:
            raise NotFound(f"no job {job_id!r}") from None
        if job.account_id != caller.account_id and not caller.is_admin:
            raise NotFound(f"no job {job_id!r}")
        return job


def _json_or_none(data: bytes) -> Any:
    """A model's JSON answer, parsed as any untrusted text is (nesting bounded); None if it is not JSON."""
    try:
        return loads(data)
    except JsonTextError:
        return None


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _error_of(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", errors="replace")
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error") or doc)[:500]
    return str(doc)[:500]
