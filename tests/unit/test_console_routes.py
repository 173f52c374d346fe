"""The console's static routes: the allow-listed files with their media types and security headers, a 304
for an unchanged file, 404 for anything else (path tricks included), no key needed, documented in the
OpenAPI; and the files themselves: no inline script or style, no HTML parsing of data."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.api.console import ASSETS, ROOT
from chalicelib.settings import Settings
from tests.support import ADMIN_KEY


@pytest.fixture
def client() -> Iterator[Client]:
    wiring.override(wiring.memory_container(Settings(admin_key=ADMIN_KEY)))
    with Client(app) as c:
        yield c
    wiring.override(None)


def _csp(headers: dict[str, str]) -> dict[str, str]:
    directives = [d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";")]
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives}


def test_the_page_is_served_with_strict_headers_and_no_key(client: Client) -> None:
    r = client.http.get("/console/")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="console.js"></script>' in r.body.decode()
    csp = _csp(r.headers)
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-cache" and r.headers["ETag"].startswith('"')


def test_without_its_slash_the_page_redirects_relatively(client: Client) -> None:
    r = client.http.get("/console")
    assert r.status_code == 301 and r.headers["Location"] == "console/"


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_every_allowed_file_has_its_media_type(client: Client, name: str) -> None:
    r = client.http.get(f"/console/{name}")
    assert r.status_code == 200, r.body
    assert r.headers["Content-Type"] == ASSETS[name]
    assert r.body == (ROOT / name).read_bytes()
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    again = client.http.get(f"/console/{name}", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.body == b""


def test_the_allow_list_is_exactly_the_files_shipped() -> None:
    """Chalice packages chalicelib/ wholesale: what is in the folder ships, and all of it must be listed."""
    assert {p.name for p in ROOT.iterdir() if p.is_file()} == set(ASSETS)


@pytest.mark.parametrize(
    "path",
    [
        "/console/app.py",
        "/console/..%2Fapp.py",
        "/console/%2e%2e%2fapp.py",
        "/console/..",
        "/console/.",
        "/console/index.html%00",
        "/console/INDEX.HTML",
        "/console/console.js%2F..%2F..%2Fapp.py",
        "/console/%2Fetc%2Fpasswd",
        "/console/api.py",
    ],
)
def test_anything_else_is_a_404(client: Client, path: str) -> None:
    r = client.http.get(path)
    assert r.status_code == 404, (path, r.body)
    assert r.json_body["code"] == "NotFound" and r.json_body["message"] == "no such console file"


@pytest.mark.parametrize("path", ["/console/../app.py", "/console/a/b", "/console/../../etc/passwd"])
def test_a_path_of_more_segments_matches_no_route(client: Client, path: str) -> None:
    r = client.http.get(path)
    assert r.status_code == 403 and b"Missing Authentication Token" in r.body


def test_the_routes_are_documented_without_security(client: Client) -> None:
    paths = client.http.get("/openapi.json").json_body["paths"]
    page, asset = paths["/console"]["get"], paths["/console/{asset}"]["get"]
    assert page["security"] == [] and asset["security"] == []
    assert "text/html" in page["responses"]["200"]["content"]
    assert "404" in asset["responses"] and "text/javascript" in asset["responses"]["200"]["content"]


SCRIPTS = sorted(name for name in ASSETS if name.endswith(".js"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_never_parse_html_or_evaluate_strings(name: str) -> None:
    """Model names, labels and reasons are tenant text: the page builds elements and text nodes only."""
    text = (ROOT / name).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in text, f"{name} uses {sink}"
    assert "localStorage" not in text  # the key lives in sessionStorage only


def test_the_page_has_no_inline_script_style_or_handlers() -> None:
    html = (ROOT / "index.html").read_text()
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from another origin
