"""Payloads by reference in the runtime: an input fetched from ``body_url``, an answer past ``spill.limit``
PUT to ``spill.reply``, and a chain's documents past the limit handed on through ``spill.handoff``.

The URLs point at a small HTTP object store on loopback (GET and PUT of a path, as presigned S3 URLs are
used); the S3 side of the same calls is in tests/contract/test_stores.py."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.pipeline import stages_of
from chalicelib.runtime.handler import Runtime, load
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.services.intake import config_file_for_dir

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits-onnx"


class ObjectStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = store.objects.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def do_PUT(self) -> None:
                store.objects[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"


@pytest.fixture(scope="module")
def store() -> Iterator[ObjectStore]:
    running = ObjectStore()
    yield running
    running.server.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_model_dir(DIGITS, config_file_for_dir(DIGITS), tmp_path_factory.mktemp("d") / "digits")


def _png() -> bytes:
    return (DIGITS / "samples" / "digit-3.png").read_bytes()


def _inline() -> dict[str, Any]:
    return {"body": base64.b64encode(_png()).decode(), "body_encoding": "base64", "content_type": "image/png"}


def test_an_input_by_reference_answers_what_the_inline_input_answers(
    store: ObjectStore, model_dir: Path
) -> None:
    rt = load(model_dir, role="fused")
    store.objects["/in/1"] = _png()
    by_ref = rt.handle(
        {"body": "", "body_url": store.url("/in/1"), "body_bytes": len(_png()), "content_type": "image/png"}
    )
    inline = rt.handle(_inline())
    assert by_ref["status"] == 200 and by_ref["body"] == inline["body"]


def test_a_reference_that_is_larger_than_it_says_or_missing_is_refused(
    store: ObjectStore, model_dir: Path
) -> None:
    rt = load(model_dir, role="fused")
    store.objects["/in/2"] = _png()
    event = {"body": "", "body_url": store.url("/in/2"), "content_type": "image/png"}
    assert rt.handle(event)["status"] == 400  # no body_bytes
    short = rt.handle({**event, "body_bytes": 10})
    assert short["status"] == 502 and json.loads(short["body"])["code"] == "InputUnavailable"
    gone = rt.handle({**event, "body_url": store.url("/in/none"), "body_bytes": 10})
    assert gone["status"] == 502 and "404" in json.loads(gone["body"])["message"]
    other = rt.handle({**event, "body_url": "file:///etc/passwd", "body_bytes": 10})
    assert other["status"] == 502 and "http(s)" in json.loads(other["body"])["message"]


def test_an_answer_past_the_limit_is_stored_and_named(store: ObjectStore, model_dir: Path) -> None:
    rt = load(model_dir, role="fused")
    inline = rt.handle({**_inline(), "accept": "image/png"})
    spill = {"limit": 1000, "reply": store.url("/out/1")}
    stored = rt.handle({**_inline(), "accept": "image/png", "spill": spill})
    assert stored["status"] == 200 and stored["body"] == ""
    assert store.objects["/out/1"] == base64.b64decode(inline["body"])
    assert stored["body_stored"] == len(store.objects["/out/1"])
    small = rt.handle({**_inline(), "spill": {**spill, "limit": 5_000_000}})
    assert small["body"] == rt.handle(_inline())["body"] and "body_stored" not in small
    broken = rt.handle({**_inline(), "spill": {"limit": 10, "reply": "http://127.0.0.1:9/x"}})
    assert broken["status"] == 502 and json.loads(broken["body"])["code"] == "PayloadStoreFailed"
    assert rt.handle({**_inline(), "spill": {"limit": "x"}})["status"] == 400


def test_a_chain_hands_documents_past_the_limit_through_the_store(
    store: ObjectStore, model_dir: Path
) -> None:
    manifest = config_file_for_dir(DIGITS)
    stages: list[Runtime] = [load(model_dir, role=role) for role in stages_of(manifest)]
    handoff = {
        role: {"put": store.url(f"/hop/{role}"), "get": store.url(f"/hop/{role}")}
        for role in ("model", "post")
    }
    spill = {"limit": 300, "reply": store.url("/hop/reply"), "handoff": handoff}
    doc: Any = {**_inline(), "spill": spill}
    sizes = []
    for rt in stages:
        doc = json.loads(json.dumps(rt.handle(doc)))  # as Step Functions carries it
        sizes.append(len(json.dumps(doc)))
    assert doc["status"] == 200 and doc["body"] == "" and doc["body_stored"] > 300
    fused = load(model_dir, role="fused").handle(_inline())
    assert store.objects["/hop/reply"] == fused["body"].encode()
    assert set(store.objects) >= {"/hop/model", "/hop/post"}  # both hops went through the store
    assert max(sizes) < 4096  # every state carried a stub, not the payload
