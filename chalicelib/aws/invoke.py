"""Runs invocations on AWS Lambda (fused) or an Express state machine (chained).

The fused path is the hot one: a boto3 ``invoke`` costs ~0.65 ms of CPU per call (its event hooks,
parameter validation, serializer, retry handler, urllib3 and parser), several times the HTTP request
itself. ``LambdaInvoker`` therefore sends the same Lambda ``Invoke`` REST call itself: the URL boto3
would build from the client's endpoint, signed with botocore's SigV4 signer and the client's own
(refreshable) credentials, over a keep-alive connection per thread with TCP_NODELAY, with boto3's retry
budget for throttling, 5xx answers and failed connections. Measured at ~0.3 ms of CPU per call,
JSON of the event and the answer included (bench/invoke_overhead.py). The chained path's
``StartSyncExecution`` is sent the same way (the ``sync-`` host prefix when the client injects it).
A client that does not have what that needs (no SigV4 signer, say a stub) is called through boto3.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from chalicelib.aws.outage import translates_outages
from chalicelib.core.config_file import DeployedFunctions
from chalicelib.core.errors import FunctionFailed, FunctionTimedOut, ResponseTooLarge
from chalicelib.core.trace import valid_trace_id
from chalicelib.core.wire import MAX_SYNC_PAYLOAD, InvocationEvent

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRYABLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "ServiceException",
        "EC2ThrottledException",
    }
)
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
ONE_WRITE_BYTES = 64 * 1024


class _OneWrite(http.client.HTTPConnection):
    """``http.client`` sends the headers and a body in two writes: two segments, and a second wake-up of
    the server that reads them (~0.05 ms a call on loopback). A small body goes out with its headers."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and len(message_body) <= ONE_WRITE_BYTES:
            self._buffer.extend((b"", message_body))  # type: ignore[attr-defined]
            data = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
            del self._buffer[:]  # type: ignore[attr-defined]
            self.send(data)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _OneWriteTls(_OneWrite, http.client.HTTPSConnection):
    pass


@translates_outages
class LambdaInvoker:
    """``lambda_client`` and ``sfn_client`` are boto3 clients (the latter with inject_host_prefix off)."""

    def __init__(
        self,
        lambda_client: Any,
        sfn_client: Any,
        *,
        direct: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.lambda_client = lambda_client
        self.sfn_client = sfn_client
        self._direct: DirectInvoke | None = DirectInvoke.of(lambda_client, sleep=sleep) if direct else None
        self._sync: DirectSyncExecution | None = (
            DirectSyncExecution.of(sfn_client, sleep=sleep) if direct and sfn_client is not None else None
        )

    def invoke(self, deployment: DeployedFunctions, event: InvocationEvent) -> dict[str, object]:
        payload = json.dumps(event, separators=(",", ":"))
        trace_id = valid_trace_id(event.get("trace_id"))
        trace_header = f"Root={trace_id}" if trace_id is not None else None  # X-Ray's own propagation
        try:
            if deployment.mode == "chained" and deployment.state_machine_arn:
                return self._execute(deployment.state_machine_arn, payload, trace_header)
            return self._invoke(deployment, payload, trace_header)
        except (ClientError, BotoCoreError) as exc:
            raise FunctionFailed(f"could not invoke the model: {exc}") from None

    def _invoke(
        self, deployment: DeployedFunctions, payload: str, trace_header: str | None = None
    ) -> dict[str, object]:
        fn = deployment.functions[0]
        if self._direct is not None:
            _, function_error, body = self._direct.invoke(
                fn.function_arn, fn.version or None, payload.encode(), trace_header=trace_header
            )
        else:
            kwargs: dict[str, Any] = {"FunctionName": fn.function_arn, "Payload": payload}
            if fn.version:
                kwargs["Qualifier"] = fn.version
            response = self.lambda_client.invoke(**kwargs)
            function_error, body = response.get("FunctionError"), response["Payload"].read()
        if function_error:
            raise _function_error(body)
        if len(body) > MAX_SYNC_PAYLOAD:  # Lambda refuses these; an emulator may not
            raise ResponseTooLarge(
                f"the model's function answered {len(body)} bytes, over Lambda's 6 MB "
                f"({MAX_SYNC_PAYLOAD} bytes) limit for a synchronous response"
            )
        return _document(body)

    def _execute(self, arn: str, payload: str, trace_header: str | None = None) -> dict[str, object]:
        if self._sync is not None:
            response = self._sync.start_sync_execution(arn, payload, trace_header=trace_header)
        else:
            extra = {"traceHeader": trace_header} if trace_header else {}
            response = self.sfn_client.start_sync_execution(stateMachineArn=arn, input=payload, **extra)
        status = response.get("status")
        if status == "SUCCEEDED":
            doc = _document(response.get("output", "{}").encode())
            billing = response.get("billingDetails")
            if isinstance(billing, dict):
                ms, mb = billing.get("billedDurationInMilliseconds"), billing.get("billedMemoryUsedInMB")
                if type(ms) is int and type(mb) is int:
                    doc["execution"] = {"billed_ms": ms, "billed_mb": mb}  # what the bill prices
            return doc
        cause = response.get("cause") or response.get("error") or status
        if status == "TIMED_OUT" or "Sandbox.Timedout" in str(cause) or "timed out" in str(cause):
            raise FunctionTimedOut(f"the model's pipeline timed out: {cause}")
        raise FunctionFailed(f"the model's pipeline failed: {response.get('error', '')} {cause}".strip())


class SignedHttp:
    """One AWS service's REST/JSON calls as signed HTTP requests, without boto3's call machinery.

    Built from a boto3 client: its endpoint, region, credentials, timeouts and retry settings (boto3's
    budget, for throttling, 5xx answers and failed connections; a read timeout is not retried).
    """

    service = ""
    """The client's service name (``client.meta.service_model.service_name``)."""
    signing_name = ""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        credentials: Any,
        *,
        host_prefix: str = "",
        connect_timeout: float = 60.0,
        read_timeout: float = 60.0,
        retries: int = 4,
        verify: str | bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an HTTP endpoint: {endpoint_url!r}")
        self.host, self.port = host_prefix + parts.hostname, parts.port
        netloc = self.host + (f":{self.port}" if self.port else "")
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        self.secure = parts.scheme == "https"
        self.region = region
        self.credentials = credentials
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.retries = retries
        self.sleep = sleep
        self._verify = verify
        self._signer, self._request = SigV4Auth, AWSRequest
        self._local = threading.local()
        self._ssl: ssl.SSLContext | None = None

    @classmethod
    def of(cls, client: Any, *, sleep: Callable[[float], None] = time.sleep) -> Any:
        """From a boto3 client of ``cls.service``, or None when it lacks what a signed request needs."""
        try:
            meta = client.meta
            signer = client._request_signer  # boto3 keeps the client's credentials on its signer
            credentials = signer._credentials
            if meta.service_model.service_name != cls.service or credentials is None:
                return None
            if getattr(signer, "signature_version", "v4") not in ("v4", "s3v4"):
                return None
            config = meta.config
            retry = dict(config.retries or {})
            if "total_max_attempts" in retry:
                retries = int(retry["total_max_attempts"]) - 1
            else:
                retries = int(retry.get("max_attempts", 4 if retry.get("mode", "legacy") == "legacy" else 2))
            endpoint = client._endpoint
            verify = getattr(endpoint.http_session, "_verify", True)
            return cls(
                meta.endpoint_url,
                meta.region_name,
                credentials,
                host_prefix=cls.host_prefix(config),
                connect_timeout=float(config.connect_timeout),
                read_timeout=float(config.read_timeout),
                retries=max(0, retries),
                verify=verify,
                sleep=sleep,
            )
        except (AttributeError, TypeError, ValueError):
            return None

    @staticmethod
    def host_prefix(config: Any) -> str:
        return ""

    def post(
        self, target: str, payload: bytes, headers: dict[str, str], operation: str
    ) -> tuple[int, dict[str, str], bytes]:
        """POST ``target`` (path and query); an error answer raises the ClientError boto3 would raise,
        an endpoint that cannot be reached EndpointConnectionError."""
        url = self.base + target
        attempt = 0
        while True:
            try:
                status, answer_headers, body = self._send(url, payload, headers)
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, TimeoutError) or attempt >= self.retries:
                    raise EndpointConnectionError(endpoint_url=url, error=exc) from None
            else:
                if status < 300:
                    return status, answer_headers, body
                error = _client_error(status, answer_headers, body, operation)
                code = error.response["Error"]["Code"]
                if attempt >= self.retries or not (status in RETRYABLE_STATUS or code in RETRYABLE_CODES):
                    raise error
            self.sleep(min(20.0, random.random() * 2**attempt))  # noqa: S311 - jitter, not secrets
            attempt += 1

    def _send(self, url: str, payload: bytes, extra: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        request = self._request("POST", url, data=payload, headers=dict(extra))
        self._signer(self.credentials.get_frozen_credentials(), self.signing_name, self.region).add_auth(
            request
        )
        headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()}
        headers["Content-Length"] = str(len(payload))
        target = urlsplit(url)._replace(scheme="", netloc="").geturl()
        for fresh in (False, True):
            conn, reused = self._connection(fresh)
            try:
                conn.request("POST", target, payload, headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if reused and isinstance(exc, _STALE):
                    continue  # the server closed an idle keep-alive connection: once more, on a new one
                raise
            if response.will_close:
                conn.close()
                self._local.conn = None
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        raise AssertionError("unreachable")

    def _connection(self, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and not fresh:
            return conn, True
        if self.secure:
            if self._ssl is None:
                self._ssl = _ssl_context(self._verify)
            conn = _OneWriteTls(self.host, self.port, timeout=self.connect_timeout, context=self._ssl)
        else:
            conn = _OneWrite(self.host, self.port, timeout=self.connect_timeout)
        conn.connect()  # http.client sets TCP_NODELAY on its socket
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout)
        self._local.conn = conn
        return conn, False


class DirectInvoke(SignedHttp):
    """Lambda's ``Invoke`` (RequestResponse)."""

    service = signing_name = "lambda"

    def invoke(
        self, function: str, qualifier: str | None, payload: bytes, *, trace_header: str | None = None
    ) -> tuple[int, str | None, bytes]:
        """(status, X-Amz-Function-Error, payload); ``trace_header``: the call's ``X-Amzn-Trace-Id``."""
        target = f"/2015-03-31/functions/{quote(function, safe='')}/invocations"
        target += f"?Qualifier={quote(qualifier, safe='')}" if qualifier else ""
        extra = {"X-Amzn-Trace-Id": trace_header} if trace_header else {}
        status, headers, body = self.post(target, payload, extra, "Invoke")
        return status, headers.get("x-amz-function-error"), body


class DirectSyncExecution(SignedHttp):
    """Step Functions' ``StartSyncExecution`` (its ``sync-`` host prefix when the client injects it)."""

    service, signing_name = "stepfunctions", "states"

    @staticmethod
    def host_prefix(config: Any) -> str:
        return "sync-" if getattr(config, "inject_host_prefix", True) else ""

    def start_sync_execution(
        self, arn: str, payload: str, *, trace_header: str | None = None
    ) -> dict[str, Any]:
        request = {"stateMachineArn": arn, "input": payload}
        if trace_header:
            request["traceHeader"] = trace_header  # X-Ray's trace through Step Functions
        body = json.dumps(request).encode()
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "AWSStepFunctions.StartSyncExecution",
        }
        _, _, answer = self.post("/", body, headers, "StartSyncExecution")
        doc = json.loads(answer or b"{}")
        return doc if isinstance(doc, dict) else {}


def _ssl_context(verify: str | bool) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True:
        from botocore.httpsession import get_cert_path

        return ssl.create_default_context(cafile=get_cert_path(True))
    return ssl.create_default_context(cafile=verify)


def _client_error(status: int, headers: dict[str, str], body: bytes, operation: str) -> ClientError:
    """An AWS JSON error answer as the ClientError boto3 raises for it."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    kind = str(doc.get("__type") or doc.get("code") or "").rsplit("#", 1)[-1]
    code = headers.get("x-amzn-errortype", "").split(":")[0] or kind or str(status)
    message = str(doc.get("message") or doc.get("Message") or body[:200].decode(errors="replace"))
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": headers.get("x-amzn-requestid", "")},
    }
    return ClientError(response, operation)


def _document(body: bytes) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise FunctionFailed("the model's function answered something that is not JSON") from None
    if not isinstance(doc, dict):
        raise FunctionFailed("the model's function answered something that is not a response document")
    return doc


def _function_error(body: bytes) -> Exception:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    kind = str(doc.get("errorType", "Unhandled"))
    message = str(doc.get("errorMessage", body[:200].decode(errors="replace")))
    if kind == "Function.ResponseSizeTooLarge":
        return ResponseTooLarge(
            f"the model's answer is over Lambda's 6 MB limit for a synchronous response: {message}"
        )
    if kind == "Sandbox.Timedout" or "timed out" in message:
        return FunctionTimedOut(f"the model's function timed out: {message}")
    return FunctionFailed(f"the model's function failed: {kind}: {message}")
