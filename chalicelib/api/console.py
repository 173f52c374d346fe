"""The web console: a static page at ``/console/`` (``chalicelib/console/``: HTML, CSS, JavaScript modules,
no build step) that reads everything from this API with the key the user signs in with.

The files need no key (``auth=False``): they hold no data and no logic of access; every call the page makes
carries ``Authorization: Bearer mp_...`` and the API decides what it shows. Only the files named in
``ASSETS`` are served, read from the package by name (a path parameter is never joined onto a directory),
with a strict Content-Security-Policy (no inline script or style, nothing from another origin) and
``no-cache`` with an ETag, so a new deployment is seen at once and an unchanged file costs a 304.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from chalice.app import Response

from chalicelib.api.http import Api
from chalicelib.core.errors import NotFound

api = Api(__name__, "console")
blueprint = api.blueprint

ROOT = Path(__file__).resolve().parents[1] / "console"
INDEX = "index.html"
ASSETS: dict[str, str] = {
    INDEX: "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "models.js": "text/javascript; charset=utf-8",
    "invoke.js": "text/javascript; charset=utf-8",
    "answer.js": "text/javascript; charset=utf-8",
    "jobs.js": "text/javascript; charset=utf-8",
    "logs.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""Every file the console is made of, and its media type: nothing else is served."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",  # answers' pictures and dropped files, as object URLs
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@functools.cache
def _file(name: str) -> tuple[str, str]:
    """(text, ETag) of an allowed file, read once per process."""
    text = (ROOT / name).read_text(encoding="utf-8")
    return text, '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def _serve(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound("no such console file", hint="the console is at /console/")
    text, etag = _file(name)
    headers: dict[str, str | list[str]] = {**HEADERS, "ETag": etag}
    if etag in (blueprint.current_request.headers.get("if-none-match") or "").split(", "):
        return Response(body="", status_code=304, headers=headers)
    return Response(body=text, headers={**headers, "Content-Type": ASSETS[name]})


@api.route(
    "/console", summary="The web console (sign in with an API key)", auth=False, errors=(301,),
    produces=("text/html",),
)  # fmt: skip
def console() -> Response:
    """``/console`` without its slash would resolve the page's relative links one level up: redirect
    (relative, so it holds under any stage or base path)."""
    path = (blueprint.current_request.context or {}).get("path") or ""
    if path and not path.endswith("/"):
        body = {"code": "MovedPermanently", "message": "the console is at console/"}
        return Response(
            body=json.dumps(body),
            status_code=301,
            headers={**HEADERS, "Location": "console/", "Content-Type": "application/json"},
        )
    return _serve(INDEX)


@api.route(
    "/console/{asset}", summary="A file of the web console", auth=False, errors=(404,),
    produces=("text/html", "text/css", "text/javascript", "image/svg+xml"),
)  # fmt: skip
def console_asset(asset: str) -> Response:
    return _serve(asset)
