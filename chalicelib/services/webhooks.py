"""Job completion webhooks: where they may go, how they are signed, how one is sent.

Signed per Standard Webhooks (the ``standardwebhooks`` library): ``webhook-id`` (the job's id, the same on
every retry, for the receiver's de-duplication), ``webhook-timestamp``, ``webhook-signature`` (HMAC-SHA256
with the account's ``whsec_`` secret). A callback URL is the tenant's: only http(s), no credentials in it,
and never to a private, link-local (the metadata service), multicast or reserved address; loopback only on
the local stack. A host name is resolved at sending time and every address it gives is checked; the request
then goes to the checked address (pinned), so a name cannot be re-pointed between the check and the send.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import secrets
import socket
import ssl
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from chalicelib.core.errors import InvalidRequest

MAX_URL_CHARS = 2048
SEND_TIMEOUT_S = 10.0
RETRY_DELAYS_S = (5, 30, 120, 600)
"""After the first attempt (when the job ends): 5 s, 30 s, 2 min, 10 min later; then the webhook FAILED."""


class WebhookRefused(Exception):
    """The callback's host is not one a webhook may go to (found when its name is resolved)."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def check_url(url: str, *, allow_loopback: bool) -> str:
    """``url`` if a webhook may be sent there (as far as can be told before resolving it), else a 400."""
    if len(url) > MAX_URL_CHARS or any(ord(c) < 33 for c in url):
        raise InvalidRequest(f"webhook URL must be at most {MAX_URL_CHARS} printable characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("webhook URL must be http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("webhook URL must not carry credentials")
    try:
        parts.port  # noqa: B018 - raises for a port that is not one
    except ValueError:
        raise InvalidRequest("webhook URL has an invalid port") from None
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url  # a name: checked when it is resolved
    if not address_allowed(address, allow_loopback=allow_loopback):
        raise InvalidRequest(f"webhooks may not go to {address} (a private, link-local or reserved address)")
    return url


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return allow_loopback
    return not (
        address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def signed_headers(secret: str, message_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    when = now or datetime.now(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, when, body),
        "Content-Type": "application/json",
        "User-Agent": "modelport-webhooks/1",
    }


def send(url: str, body: str, headers: dict[str, str], *, allow_loopback: bool) -> int:
    """POST ``body``; the HTTP status. ``WebhookRefused`` when the host resolves to an address not allowed;
    ``OSError`` (and ``http.client`` errors) when it does not answer."""
    parts = urlsplit(check_url(url, allow_loopback=allow_loopback))
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    bad = [
        a for a in addresses if not address_allowed(ipaddress.ip_address(a), allow_loopback=allow_loopback)
    ]
    if not addresses or bad:
        raise WebhookRefused(f"{host} resolves to {', '.join(bad) or 'nothing'}: not a place webhooks may go")
    connection: Any = (
        _PinnedHttps(host, addresses[0], port)
        if parts.scheme == "https"
        else _PinnedHttp(host, addresses[0], port)
    )
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body.encode(), headers={"Host": parts.netloc, **headers})
        response = connection.getresponse()
        response.read(64 * 1024)
        return int(response.status)
    finally:
        connection.close()


class _PinnedHttp(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int) -> None:
        super().__init__(host, port, timeout=SEND_TIMEOUT_S)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHttps(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, port: int) -> None:
        super().__init__(host, port, timeout=SEND_TIMEOUT_S, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]
