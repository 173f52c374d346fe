"""The edge's kept-alive connections to moto: reused, and replaced when moto closed one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config

from chalicelib.local.awslambda.emulator import LambdaEmulator
from chalicelib.local.edge.server import EdgeServer
from chalicelib.local.launchers import ProcessImages, ProcessLauncher

pytestmark = pytest.mark.functional


class FakeMoto(ThreadingHTTPServer):
    """Answers every request with a small SQS-like XML document; counts connections; can drop each
    connection silently after its answer (as a restarted or idle-closing server does)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.requests = 0
        self.drop_after_answer = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeMoto
    answer = (
        b'<?xml version="1.0"?><ListQueuesResponse><ListQueuesResult></ListQueuesResult>'
        b"<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></ListQueuesResponse>"
    )

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)
        if self.server.drop_after_answer:
            self.close_connection = True  # without saying so: the edge finds out on its next request


@pytest.fixture
def edge(tmp_path: Any) -> Iterator[tuple[EdgeServer, FakeMoto]]:
    moto = FakeMoto()
    threading.Thread(target=moto.serve_forever, daemon=True).start()
    emulator = LambdaEmulator(ProcessLauncher(ProcessImages(tmp_path)))
    server = EdgeServer(0, moto.url, emulator).start()
    yield server, moto
    server.stop()
    emulator.shutdown()
    moto.shutdown()
    moto.server_close()


def test_connections_to_moto_are_reused_and_a_dropped_one_is_replaced(
    edge: tuple[EdgeServer, FakeMoto],
) -> None:
    server, moto = edge
    sqs = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("sqs", endpoint_url=server.url, config=Config(retries={"max_attempts": 0}))
    for _ in range(5):
        sqs.list_queues()
    assert (moto.requests, moto.connections) == (5, 1)

    moto.drop_after_answer = True
    for _ in range(4):
        sqs.list_queues()  # each request after a drop meets a closed connection: retried on a new one
    # the first is answered on the kept connection, the other three each on a new one; none is lost
    assert (moto.requests, moto.connections) == (9, 4)
