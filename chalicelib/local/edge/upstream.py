"""The edge's way to moto: requests forwarded as they came (method, path, query, headers, body, streamed
both ways) over kept-alive connections, and the edge's own Step Functions calls to moto.

When moto does not answer, the caller gets a 502 (refused, reset) or 504 (no answer within the upstream
timeout) at once, never a hang (``responses.upstream_failed``).
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from io import BufferedIOBase
from typing import Any
from urllib.parse import urlsplit

from chalicelib.local.edge.responses import json_doc, send_reply, upstream_failed

HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    }
)
"""Hop-by-hop headers: never forwarded (the edge frames each side's body itself)."""
BUFFERED_MAX = 1 << 20
"""Request bodies up to this size are read whole and go over a pooled keep-alive connection to moto
(a stale one is retried once on a fresh connection); larger and chunked ones are streamed on a new one."""
POOL_MAX = 32
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def read_chunks(rfile: BufferedIOBase) -> Iterator[bytes]:
    """A chunked request body, chunk by chunk (trailers read and dropped)."""
    while size := int(rfile.readline().split(b";")[0].strip() or b"0", 16):
        yield rfile.read(size)
        rfile.readline()
    while rfile.readline().strip():  # trailers
        pass


class ConnectionPool:
    """Kept-alive connections to moto: a new TCP connection per request costs moto's server a connect, an
    accept and a thread. A connection is pooled with the URL it goes to; one to another URL is dropped."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._pool: list[tuple[str, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    def new(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        return http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.timeout_s
        )

    def checkout(self, url: str) -> tuple[http.client.HTTPConnection, bool]:
        """A kept-alive connection to ``url`` if one is idle (True), else a new one (False)."""
        with self._lock:
            while self._pool:
                pooled_url, conn = self._pool.pop()
                if pooled_url == url:
                    return conn, True
                conn.close()
        return self.new(url), False

    def checkin(self, url: str, conn: http.client.HTTPConnection) -> None:
        """Back to the pool, once its answer was read whole."""
        with self._lock:
            if len(self._pool) < POOL_MAX:
                self._pool.append((url, conn))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pooled, self._pool = self._pool, []
        for _, conn in pooled:
            conn.close()


class Forwarder:
    """One request's way to moto: the handler it came on, the pool, and moto's URL."""

    def __init__(self, handler: BaseHTTPRequestHandler, pool: ConnectionPool, moto_url: str) -> None:
        self.handler = handler
        self.pool = pool
        self.moto_url = moto_url

    def call(self, operation: str, doc: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """One Step Functions JSON call to moto, with the caller's credentials (moto takes the account and
        region from them). Raises OSError/HTTPException."""
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"AWSStepFunctions.{operation}",
            "Authorization": self.handler.headers.get("Authorization", ""),
        }
        body = json.dumps(doc).encode()
        conn, response = self._exchange(lambda c: c.request("POST", "/", body, headers))
        try:
            data = response.read()
        except BaseException:
            conn.close()
            raise
        self._done(conn, response)
        return response.status, json_doc(data)

    def forward(self, body: bytes | None = None) -> None:
        """Send the request to moto as it came (or with ``body``) and stream the answer back."""
        handler = self.handler
        if body is not None:
            self._forward_whole(body, send_length=True)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower() or length > BUFFERED_MAX:
            self._forward_streamed()
            return
        body = handler.rfile.read(length)
        if len(body) < length:
            raise ConnectionResetError("the client closed the connection mid-body")
        self._forward_whole(body, send_length=bool(length) or handler.command in ("POST", "PUT", "PATCH"))

    def failed(self, exc: BaseException) -> None:
        send_reply(self.handler, upstream_failed(self.moto_url, exc))

    def _exchange(
        self, send: Callable[[http.client.HTTPConnection], None]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """``send`` a whole request on a pooled connection and read the answer's head; a pooled
        connection moto had closed is retried once on a new one. Raises OSError/HTTPException."""
        for attempt in range(2):
            conn, reused = self.pool.checkout(self.moto_url)
            try:
                send(conn)
                return conn, conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if not (reused and attempt == 0 and isinstance(exc, _STALE)):
                    raise
        raise AssertionError("unreachable")

    def _done(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        if response.isclosed() and not response.will_close:
            self.pool.checkin(self.moto_url, conn)
        else:
            conn.close()

    def _put_head(self, conn: http.client.HTTPConnection) -> None:
        handler = self.handler
        conn.putrequest(handler.command, handler.path, skip_host=True, skip_accept_encoding=True)
        for name, value in handler.headers.items():
            if name.lower() not in HOP:
                conn.putheader(name, value)

    def _forward_whole(self, body: bytes, *, send_length: bool) -> None:
        """A request read whole: over a pooled connection."""

        def send(conn: http.client.HTTPConnection) -> None:
            self._put_head(conn)
            if send_length:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)

        try:
            conn, response = self._exchange(send)
        except (OSError, http.client.HTTPException) as exc:
            self.failed(exc)
            return
        complete = False
        try:
            complete = self._relay(response)
        finally:
            if complete:
                self._done(conn, response)
            else:
                conn.close()

    def _forward_streamed(self) -> None:
        """A chunked or large request: streamed on a new connection."""
        handler = self.handler
        conn = self.pool.new(self.moto_url)
        try:
            self._put_head(conn)
            if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                for chunk in read_chunks(handler.rfile):
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            else:
                self._send_sized(conn)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            handler.close_connection = True  # the request body may be half read
            self.failed(exc)
            return
        try:
            self._relay(response)
        finally:
            conn.close()

    def _send_sized(self, conn: http.client.HTTPConnection) -> None:
        handler = self.handler
        remaining = int(handler.headers.get("Content-Length") or 0)
        if remaining or handler.command in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(remaining))
        conn.endheaders()
        while remaining > 0:
            piece = handler.rfile.read(min(remaining, 1 << 16))
            if not piece:
                raise ConnectionResetError("the client closed the connection mid-body")
            conn.send(piece)
            remaining -= len(piece)

    def _relay(self, response: http.client.HTTPResponse) -> bool:
        """Stream moto's answer back; True when it was read to its end."""
        handler = self.handler
        handler.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP:
                handler.send_header(name, value)
        length = response.getheader("Content-Length")
        bodiless = handler.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        if length is not None:
            handler.send_header("Content-Length", length)
        elif not bodiless:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        if bodiless:
            response.read()
            return True
        try:
            while chunk := response.read1(1 << 16):
                handler.wfile.write(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (OSError, http.client.HTTPException):
            handler.close_connection = True  # moto went away mid-answer: the client sees a short body
            return False
        if length is None:
            handler.wfile.write(b"0\r\n\r\n")
        response.read()  # b"": read1 stops at the end without marking the answer closed; this does
        return True
