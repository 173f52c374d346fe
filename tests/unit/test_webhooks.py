"""Job webhooks: where a callback may go, and signed delivery with retries (a real HTTP receiver on
loopback, verified with the Standard Webhooks library as a receiver would)."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook

from chalicelib.api.deps import services
from chalicelib.core.errors import InvalidRequest
from chalicelib.services import webhooks
from chalicelib.services.webhooks import address_allowed, check_url
from tests.unit import test_jobs_api
from tests.unit.test_invoke_api import RECORD
from tests.unit.test_jobs_api import run_queued

pytestmark = pytest.mark.unit
world = test_jobs_api.world  # the fixture: the memory container with iris deployed


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "http:///nohost",
        "https://user:pw@example.com/",
        "http://169.254.169.254/latest/meta-data/",  # the metadata service
        "http://10.0.0.5/hook",
        "http://192.168.1.1/",
        "http://[fd00::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://example.com:99999/",
        "http://example.com/" + "a" * 3000,
        "http://exa mple.com/",
    ],
)
def test_callbacks_to_places_a_tenant_must_not_reach_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        check_url(url, allow_loopback=True)


def test_public_hosts_and_names_pass_and_loopback_only_on_the_local_stack() -> None:
    assert check_url("https://hooks.example.com/modelport?x=1", allow_loopback=False)
    assert check_url("http://93.184.216.34/hook", allow_loopback=False)
    assert check_url("http://127.0.0.1:9000/hook", allow_loopback=True)
    with pytest.raises(InvalidRequest):
        check_url("http://127.0.0.1:9000/hook", allow_loopback=False)
    assert not address_allowed(ipaddress.ip_address("::1"), allow_loopback=False)


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers ``status`` and records what it got."""

    def __init__(self) -> None:
        self.status = 204
        self.got: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/modelport"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def submit(world: dict[str, Any], url: str) -> str:
    r = world["alice"].call("POST", f"/v1/models/iris/jobs?webhook={url}", {"records": [RECORD]})
    assert r.status_code == 202, r.body
    return str(r.json_body["job_id"])


def test_a_done_job_is_posted_signed_and_the_receiver_can_verify_it(
    world: dict[str, Any],
    receiver: Receiver,
) -> None:
    job_id = submit(world, receiver.url)
    run_queued(world)
    ((headers, body),) = receiver.got
    secret = world["alice"].call("GET", "/v1/webhook-secret").json_body["secret"]
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "job.completed" and event["data"]["job_id"] == job_id
    assert event["data"]["status"] == "SUCCEEDED" and event["data"]["result"]["status"] == 200
    assert headers["webhook-id"] == job_id
    with pytest.raises(Exception):  # noqa: B017 - whichever error the library raises for a forgery
        Webhook(webhooks.new_secret()).verify(body, headers)
    doc = world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body
    assert doc["webhook"] == {"url": receiver.url, "status": "DELIVERED", "attempts": 1}


def test_a_failing_receiver_gets_retries_with_backoff_then_the_webhook_fails(
    world: dict[str, Any],
    receiver: Receiver,
) -> None:
    receiver.status = 500
    job_id = submit(world, receiver.url)
    run_queued(world)
    queue = world["container"].job_queue
    for _ in range(10):  # deliver each queued retry, as SQS would after its delay
        retries = [(doc, delay) for doc, delay in queue.messages if doc.get("webhook_attempt")]
        queue.messages.clear()
        if not retries:
            break
        for doc, _delay in retries:
            services().jobs.handle_message(json.dumps(doc))
            services().jobs.handle_message(json.dumps(doc))  # a duplicate message sends nothing more
    assert len(receiver.got) == 1 + len(webhooks.RETRY_DELAYS_S)
    assert {h["webhook-id"] for h, _ in receiver.got} == {job_id}  # one id: the receiver de-duplicates
    doc = world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body
    assert doc["status"] == "SUCCEEDED"  # the job stands; only its webhook failed
    assert doc["webhook"]["status"] == "FAILED" and doc["webhook"]["error"] == "the receiver answered 500"


def test_the_retry_delays_grow(world: dict[str, Any], receiver: Receiver) -> None:
    receiver.status = 503
    submit(world, receiver.url)
    run_queued(world)
    assert [(d.get("webhook_attempt"), delay) for d, delay in world["container"].job_queue.messages][-1] == (
        2,
        5,
    )


def test_a_callback_to_the_metadata_service_is_refused_at_submit(world: dict[str, Any]) -> None:
    r = world["alice"].call(
        "POST", "/v1/models/iris/jobs?webhook=http://169.254.169.254/", {"records": [RECORD]}
    )
    assert r.status_code == 400 and "link-local" in r.json_body["message"]
    assert world["container"].job_queue.sent == []


def test_a_name_that_resolves_to_loopback_is_refused_off_the_local_stack() -> None:
    with pytest.raises(webhooks.WebhookRefused, match="resolves to"):
        webhooks.send("http://localhost:9/x", "{}", {}, allow_loopback=False)
