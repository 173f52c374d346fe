"""Message-driven invocations: the invocations queue's messages become jobs, their completions replies.

A message's body is ``{"model", "version"?, "input" | "input_url", "content_type"?, "accept"?,
"reply_to"?}`` and its ``Authorization`` message attribute is ``Bearer <API key>``: a message acts as an
account, as a request does. ``input`` is the request (a JSON value, or a string for a text body); an
``input_url`` is an upload of the account's (``POST /v1/uploads``). Each message becomes the job
``JobService.submit`` makes for its id, once: a duplicate delivery (the same message id) finds the job
and does nothing, so one message gives one result. The completion goes to ``reply_to`` (an SQS queue or
an EventBridge bus) as the "Modelport Invocation Completed" event. The job keeps the sender's trace:
the ``AWSTraceHeader`` system attribute SQS sets when the sender traces (only a well-formed ``Root`` is
taken, as from a request's header); without one, a new trace id. A message that cannot become a job
(not JSON, a wrong shape, no valid key, an unknown model, a request the protocol refuses) is a poison
message: it goes to the dead-letter queue with the reason, and the key is never copied there. An
outage is raised, so SQS delivers the message again; after ``MAX_ATTEMPTS`` it is a dead letter too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError

from chalicelib.core import trace
from chalicelib.core.config import SLUG
from chalicelib.core.errors import Conflict, ModelportError, Unauthorized, Unavailable
from chalicelib.core.jsontext import JsonTextError, loads
from chalicelib.core.ports import Outbox
from chalicelib.core.protocol import Frozen
from chalicelib.services.accounts import AccountService
from chalicelib.services.jobs import JobService

log = logging.getLogger("modelport.messages")

MAX_MESSAGE_BYTES = 1024 * 1024
"""SQS carries up to 1 MiB a message; a longer body is refused before it is parsed."""
MAX_ATTEMPTS = 4
AUTHORIZATION = "Authorization"


class InvocationMessage(Frozen):
    model: str = Field(pattern=SLUG.pattern, max_length=63)
    version: int | None = Field(default=None, ge=1)
    input: Any = None
    input_url: str | None = Field(default=None, max_length=2048)
    content_type: str = Field(default="application/json", max_length=200)
    accept: str = Field(default="application/json", max_length=200)
    reply_to: str | None = Field(default=None, max_length=2048)


@dataclass(frozen=True)
class Received:
    """One SQS record, as much of it as the service reads."""

    message_id: str
    body: str
    attributes: dict[str, str]
    receive_count: int = 1
    trace_header: str | None = None
    """SQS's ``AWSTraceHeader`` system attribute (``Root=1-...;Parent=...;Sampled=...``), unparsed."""

    def trace_id(self) -> str:
        """The sender's trace id when its header is well formed (``core/trace``), else a new one."""
        return trace.parse_trace_header(self.trace_header) or trace.mint_trace_id()


def received(record: dict[str, Any]) -> Received:
    """An SQS record (Lambda's event shape) as the service reads it; attributes other than strings are
    left out."""
    attributes = {
        str(name): str(value.get("stringValue"))
        for name, value in (record.get("messageAttributes") or {}).items()
        if isinstance(value, dict) and isinstance(value.get("stringValue"), str)
    }
    system = record.get("attributes") or {}
    count = str(system.get("ApproximateReceiveCount", "1"))
    header = system.get("AWSTraceHeader")
    return Received(
        message_id=str(record.get("messageId", "")),
        body=str(record.get("body", "")),
        attributes=attributes,
        receive_count=int(count) if count.isdigit() else 1,
        trace_header=header if isinstance(header, str) and len(header) <= trace.MAX_HEADER_CHARS else None,
    )


class InvocationMessages:
    def __init__(self, jobs: JobService, accounts: AccountService, outbox: Outbox) -> None:
        self.jobs = jobs
        self.accounts = accounts
        self.outbox = outbox

    def handle(self, record: Received) -> str | None:
        """The job the message became (None: a duplicate, or a dead letter), observed under the sender's
        trace id (or a new one), which the job keeps."""
        with trace.observing(record.trace_id()) as observation:
            return self._handle(record, observation.trace_id)

    def _handle(self, record: Received, trace_id: str) -> str | None:
        try:
            message = self._parse(record.body)
            key = record.attributes.get(AUTHORIZATION, "").removeprefix("Bearer ").strip()
            if not key:
                raise Unauthorized(f"the message has no {AUTHORIZATION} attribute (Bearer <API key>)")
            caller = self.accounts.authenticate(key)
            body = _body(message)
            job = self.jobs.submit(
                caller,
                message.model,
                message.version,
                body=body,
                content_type=message.content_type,
                accept=message.accept,
                input_url=message.input_url,
                reply_to=message.reply_to,
                message_id=record.message_id,
                trace_id=trace_id,
            )
        except Conflict as exc:
            if "was taken already" in str(exc):
                log.info("duplicate delivery of message %s: its job exists", record.message_id)
                return None
            self._dead(record, exc)
            return None
        except Unavailable as exc:
            if record.receive_count >= MAX_ATTEMPTS:
                self._dead(record, exc, f"gave up after {record.receive_count} attempts: ")
                return None
            raise  # SQS delivers it again after the visibility timeout
        except ModelportError as exc:
            self._dead(record, exc)
            return None
        return job.job_id

    def _parse(self, body: str) -> InvocationMessage:
        if len(body.encode("utf-8", errors="surrogatepass")) > MAX_MESSAGE_BYTES:
            raise _poison(f"the message is over {MAX_MESSAGE_BYTES} bytes")
        try:
            doc = loads(body.encode("utf-8", errors="surrogatepass"))
        except JsonTextError as exc:
            raise _poison(f"the message is not JSON: {exc.message}") from None
        if not isinstance(doc, dict):
            raise _poison("the message is not a JSON object {model, input | input_url, ...}")
        try:
            message = InvocationMessage.model_validate(doc)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise _poison(f"the message does not have the invocation shape: {problems}") from None
        if ("input" in doc) == (message.input_url is not None):
            raise _poison("the message needs exactly one of input and input_url")
        return message

    def _dead(self, record: Received, exc: Exception, prefix: str = "") -> None:
        reason = f"{prefix}{type(exc).__name__}: {exc}"
        log.warning("message %s is a dead letter: %s", record.message_id, reason)
        self.outbox.dead_letter(record.message_id, record.body, reason)


def _poison(message: str) -> ModelportError:
    from chalicelib.core.errors import InvalidRequest

    return InvalidRequest(message)


def _body(message: InvocationMessage) -> bytes:
    if message.input_url is not None:
        return b""
    if isinstance(message.input, str) and not message.content_type.startswith("application/json"):
        return message.input.encode()
    return json.dumps(message.input, separators=(",", ":")).encode()
