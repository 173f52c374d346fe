"""The web console in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) against the
local stack (moto, the Lambda emulator, the API process, the event pump; process images): iris-onnx,
digits-onnx and sentiment-predictor deployed through the API as a client deploys them and answered by
their functions (real ONNX predictions, the real bar chart PNG, log lines read back from the CloudWatch
Logs emulation), and a version whose deployment failed.

Every page is screenshotted into ``$MODELPORT_TEST_LOGS/console/`` (default: the temp dir); with
``MODELPORT_UPDATE_SCREENSHOTS=1`` the two README pictures under docs/ are made again. A console error or
an uncaught page error fails the test, but for the failed requests a test expects (a bad key's 401).
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.cli_jobs import run_batch
from chalicelib.client import Client, Connection, deploy
from chalicelib.local.stack import LOCAL_CREDENTIALS, LocalStack
from tests.support import ROOT

try:
    from playwright import sync_api
except ImportError:  # requirements-dev.txt has it; the browser fixture says so
    sync_api = None  # type: ignore[assignment]

pytestmark = [pytest.mark.functional, pytest.mark.browser]

CHROMIUM = os.environ.get("MODELPORT_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
EXAMPLES = ("iris-onnx", "digits-onnx", "sentiment-predictor")
BROKEN = "iris-broken"
DIGIT = ROOT / "examples/digits-onnx/samples/digit-7.png"
DOCS = {"models": ROOT / "docs/console-models.png", "invoke": ROOT / "docs/console-invoke.png"}
TIMEOUT_MS = 30_000


def logs_dir() -> Path:
    base = os.environ.get("MODELPORT_TEST_LOGS") or str(Path(tempfile.gettempdir()) / "modelport-test-logs")
    path = Path(base) / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


def broken_model(root: Path) -> Path:
    """iris-onnx under another name, with a model file that is not ONNX: its deployment fails."""
    config = (ROOT / "examples/iris-onnx/modelport.yaml").read_text()
    broken = root / BROKEN
    broken.mkdir()
    (broken / "modelport.yaml").write_text(
        re.sub(r"^name: *\S+", f"name: {BROKEN}", config, count=1, flags=re.M)
    )
    (broken / "model.onnx").write_bytes(b"\x08not a model")
    return broken


@dataclass
class Site:
    url: str
    alice: str
    bob: str
    reason: str
    """The failed deployment's reason, as the API gives it."""
    modes: dict[str, str]
    """Each example's pipeline mode, as its deployment decided it (``auto``: fused or chained)."""
    endpoint_url: str
    data_bucket: str


def _account(admin: Client, name: str) -> str:
    return str(admin.json("POST", "/v1/accounts", {"name": name})["api_key"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The local stack (moto, the Lambda emulator running the examples' process images, the API process,
    the event pump that runs jobs), the examples deployed through the API as a client deploys them."""
    stack = LocalStack(edge_port=0, api_port=0, launcher="process", registry=False).start()
    try:
        assert stack.api_url is not None
        admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
        alice, bob = _account(admin, "alice"), _account(admin, "bob")
        owner = Client(Connection(stack.api_url, alice, stack.endpoint_url))
        modes = {}
        for example in EXAMPLES:
            outcome = deploy(owner, ROOT / "examples" / example)
            assert outcome.status == "READY", (example, outcome.reason)
            assert outcome.config is not None
            modes[example] = outcome.config["deployment"]["mode"]
        failed = deploy(owner, broken_model(tmp_path_factory.mktemp("console")))
        assert failed.status == "FAILED" and failed.reason
        yield Site(
            stack.api_url, alice, bob, failed.reason, modes, stack.endpoint_url, stack.outputs["data_bucket"]
        )
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [
        *([f"no Chromium at {CHROMIUM} (apt-get install chromium)"] if not Path(CHROMIUM).exists() else []),
        *(["no playwright (pip install -r requirements-dev.txt)"] if sync_api is None else []),
    ]
    if missing:
        if os.environ.get("CI"):  # .ci/run installs both
            pytest.fail("; ".join(missing))
        pytest.skip("; ".join(missing))
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield launched
        launched.close()


@dataclass
class Console:
    """What the page said: console errors and uncaught exceptions, less the failed requests expected."""

    errors: list[str] = field(default_factory=list)
    expected: list[tuple[str, int]] = field(default_factory=list)
    """(path, status) of requests allowed to fail (Chromium logs each as a console error)."""

    def expect_failure(self, path: str, status: int) -> None:
        self.expected.append((path, status))

    def unexpected(self) -> list[str]:
        left = []
        for error in self.errors:
            status = re.search(r"status of (\d+)", error)
            if status and any(
                error.endswith(f" {path}") and int(status[1]) == code for path, code in self.expected
            ):
                continue
            left.append(error)
        return left


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[tuple[Any, Console]]:
    """A fresh context (its own sessionStorage) at 1280x800, whose console is checked after the test."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    console = Console()

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            path = where.removeprefix(site.url) if where.startswith(site.url) else where
            console.errors.append(f"{msg.text} {path}".strip())

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))
    yield tab, console
    context.close()
    assert console.unexpected() == [], "console errors on the page"


def shot(tab: Any, name: str, docs: str | None = None) -> None:
    path = logs_dir() / f"{name}.png"
    tab.screenshot(path=str(path))
    if docs is not None and os.environ.get("MODELPORT_UPDATE_SCREENSHOTS") == "1":
        from PIL import Image  # a 256-colour palette: a third of the bytes, the same picture to a reader

        with Image.open(path) as picture:
            picture.convert("RGB").quantize(256).save(DOCS[docs], optimize=True)


def open_console(tab: Any, site: Site, fragment: str = "") -> None:
    tab.goto(f"{site.url}/console/{fragment}")


def test_sign_in_by_keyboard_then_the_models_with_status_mode_and_size(
    page: tuple[Any, Console], site: Site
) -> None:
    tab, console = page
    console.expect_failure("/v1/accounts/me", 401)
    open_console(tab, site)
    tab.wait_for_selector("h1:text('Sign in')")
    assert tab.evaluate("document.activeElement.id") == "api-key"  # the key field has the focus
    tab.keyboard.type("mp_not-a-key")
    tab.keyboard.press("Enter")
    alert = tab.wait_for_selector(".error[role=alert]")
    assert "That API key was not accepted" in alert.inner_text()
    assert "API key" in tab.inner_text(".error .error-message")  # the API's own message
    shot(tab, "01-sign-in-refused")

    tab.fill("#api-key", site.alice)
    tab.keyboard.press("Enter")
    tab.wait_for_selector("h1:text('Models')")
    tab.wait_for_selector("table tbody tr")
    assert tab.evaluate("sessionStorage.getItem('modelport.key')") == site.alice
    assert site.alice not in tab.url
    rows = {
        r.query_selector("th").inner_text(): [c.inner_text() for c in r.query_selector_all("td")]
        for r in tab.query_selector_all("table tbody tr")
    }
    assert set(rows) == {*EXAMPLES, BROKEN}
    _, default, status, mode, size, versions = rows["iris-onnx"]
    assert (default, mode, versions) == ("v1", site.modes["iris-onnx"], "1") and status.startswith("READY")
    assert re.fullmatch(r"[\d.]+ (B|KB|MB)", size), size
    assert rows[BROKEN][2].startswith("FAILED") and site.reason[:40] in rows[BROKEN][2]
    assert tab.is_visible("section.usage")
    shot(tab, "02-models")

    tab.focus("a[href='#model=digits-onnx']")  # keyboard again: the model link, Enter
    tab.keyboard.press("Enter")
    tab.wait_for_selector("h1:text('digits-onnx')")
    tab.wait_for_selector(".drop")


def test_the_iris_form_gives_labels_the_chart_and_server_timing(
    page: tuple[Any, Console], site: Site
) -> None:
    tab, _ = page
    open_console(tab, site, f"#key={site.alice}&model=iris-onnx")
    tab.wait_for_selector("h1:text('iris-onnx')")
    assert site.alice not in tab.url and "model=iris-onnx" in tab.url  # the key left the address bar
    names = tab.eval_on_selector_all("form .field input", "els => els.map(e => e.name)")
    assert names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert tab.input_value("input[name=sepal_length]") == "0"  # the generated example
    assert tab.get_attribute("input[name=sepal_length]", "step") == "any"
    assert tab.inner_text("form .field .help") == "float32 · ±3.4e+38"  # type and bounds of the schema
    for name, value in zip(names, ("5.1", "3.5", "1.4", "0.2"), strict=True):
        tab.fill(f"input[name={name}]", value)
    tab.click("button:text('Invoke')")
    tab.wait_for_selector("table.labels")
    labels = tab.eval_on_selector_all("table.labels tbody th", "els => els.map(e => e.textContent)")
    assert labels[0] == "setosa" and sorted(labels) == ["setosa", "versicolor", "virginica"]
    tab.wait_for_function("() => document.querySelector('img.figure')?.complete")
    size = tab.eval_on_selector("img.figure", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [640, 360]  # the bar chart the runtime drew (640x360 PNG), decoded by the browser
    legend = tab.inner_text(".timing-legend")
    assert "model" in legend and "pre" in legend and "post" in legend
    assert tab.eval_on_selector_all(".timing-bar .seg", "els => els.length") >= 3
    shot(tab, "03-invoke-iris-cold")

    tab.fill("input[name=petal_length]", "4.5")  # again, warm: versicolor
    tab.fill("input[name=petal_width]", "1.5")
    tab.fill("input[name=sepal_length]", "6.2")
    tab.click("button:text('Invoke')")
    tab.wait_for_function(
        "() => document.querySelector('table.labels tbody th')?.textContent === 'versicolor'"
        " && document.querySelector('img.figure')?.complete"
    )
    caption = tab.inner_text(".timing figcaption")
    assert "cold start" not in caption and re.search(r"billed [\d.]+ (µs|ms)", caption), caption
    assert re.search(r"\$0\.\d+", caption), caption  # the call's price (Server-Timing's cost entry)
    tab.eval_on_selector("h1", "el => el.scrollIntoView()")
    shot(tab, "03-invoke-iris", docs="invoke")

    trace = tab.inner_text(".request-logs .trace-id")  # the answer's X-Amzn-Trace-Id, and its lines
    assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", trace), trace
    tab.click("button:text('Show its log lines')")
    tab.wait_for_selector(".request-logs .log-lines table tbody tr")
    rows = [  # textContent: the folded JSON of each structured line included
        [c.text_content() for c in r.query_selector_all("th, td")]
        for r in tab.query_selector_all(".request-logs .log-lines tbody tr")
    ]
    sources = {source for _, source, _ in rows}
    stages = {"model", "function"} & sources
    assert "API" in sources and stages, rows
    assert all(trace in line for _, _, line in rows), rows
    tab.eval_on_selector(".request-logs", "el => el.scrollIntoView()")
    shot(tab, "03-invoke-iris-logs")

    open_console(tab, site, "#view=models")  # the two calls, counted and priced in the usage panel
    tab.wait_for_selector("section.usage table tbody tr")
    usage = {
        r.query_selector("td, th").inner_text(): [c.inner_text() for c in r.query_selector_all("td")]
        for r in tab.query_selector_all("section.usage table tbody tr")
    }
    assert "iris-onnx" in usage, usage
    invocations, errors, *_, cost = usage["iris-onnx"][-5:]
    assert int(invocations.replace(",", "")) >= 2 and errors == "0", usage
    assert re.fullmatch(r"0\.\d+", cost), usage
    shot(tab, "03-models-with-usage", docs="models")  # README's picture: the models and their usage


def test_the_raw_json_editor_and_an_api_error_with_its_pointers(
    page: tuple[Any, Console], site: Site
) -> None:
    tab, console = page
    console.expect_failure("/v1/models/iris-onnx/versions/1/invoke", 400)
    open_console(tab, site, f"#key={site.alice}&model=iris-onnx")
    tab.wait_for_selector("input[name=sepal_length]")
    tab.fill("input[name=sepal_length]", "5.9")
    tab.click("text=Edit as JSON")
    editor = tab.wait_for_selector("textarea.code")
    assert json.loads(editor.input_value())["records"][0]["sepal_length"] == 5.9  # seeded from the form
    editor.fill(json.dumps({"records": [{"sepal_length": "wide", "sepal_width": 3.0}]}))
    tab.click("button:text('Invoke')")
    alert = tab.wait_for_selector(".error[role=alert]")
    text = alert.inner_text()
    assert "The invocation failed (400 InvalidRequest)" in text
    assert "/records/0/sepal_length" in tab.inner_text(".error-list")  # the API's JSON pointers
    shot(tab, "09-invoke-refused")
    tab.click("text=Back to the form")
    tab.wait_for_selector("input[name=petal_width]")


def test_a_dropped_digit_gets_its_top_3(page: tuple[Any, Console], site: Site) -> None:
    tab, _ = page
    open_console(tab, site, f"#key={site.alice}&model=digits-onnx")
    tab.wait_for_selector(".drop")
    transfer = tab.evaluate_handle(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "digit-7.png", {type: "image/png"}));
            return data;
        }""",
        base64.b64encode(DIGIT.read_bytes()).decode(),
    )
    tab.dispatch_event(".drop", "dragover", {"dataTransfer": transfer})
    tab.dispatch_event(".drop", "drop", {"dataTransfer": transfer})
    assert "digit-7.png" in tab.inner_text(".drop .chosen")
    tab.click("button:text('Invoke')")
    tab.wait_for_selector("table.labels")
    labels = tab.eval_on_selector_all("table.labels tbody th", "els => els.map(e => e.textContent)")
    assert len(labels) == 3 and labels[0] == "7"
    scores = tab.eval_on_selector_all("table.labels tbody td.score", "els => els.map(e => e.textContent)")
    assert all(re.fullmatch(r"[01]\.\d{4}", s) for s in scores), scores
    tab.wait_for_function("() => document.querySelector('img.figure')?.complete")
    assert tab.eval_on_selector("img.figure", "img => img.naturalWidth") == 640
    shot(tab, "04-invoke-digits")


def test_a_failed_deployment_shows_its_stages_and_reason(page: tuple[Any, Console], site: Site) -> None:
    tab, _ = page
    open_console(tab, site, f"#key={site.alice}&model={BROKEN}")
    tab.wait_for_selector(f"h1:text('{BROKEN}')")
    box = tab.wait_for_selector(".deployment-failed .reason-box")
    assert site.reason in box.inner_text()
    failed = tab.inner_text(".deployment-failed .stages li.failed")
    assert "failed after" in failed
    assert "FAILED" in tab.inner_text("#versions-title + .scroll")
    assert "No READY version to invoke" in tab.inner_text("#invoke")
    shot(tab, "05-failed-deployment")


def test_a_text_model_run_as_a_job_shows_on_the_jobs_page(page: tuple[Any, Console], site: Site) -> None:
    tab, _ = page
    open_console(tab, site, f"#key={site.alice}&model=sentiment-predictor")
    area = tab.wait_for_selector("textarea[name=text]")
    area.fill("a wonderful, delightful day")
    assert tab.input_value("input[name=threshold]") == "0"  # the schema's default
    tab.check("text=Run as a job")
    tab.click("button:text('Invoke')")
    tab.wait_for_selector("text=See the jobs").click()
    tab.wait_for_selector("h1:text('Jobs')")
    for _ in range(50):
        if "SUCCEEDED" in tab.inner_text("table tbody"):
            break
        tab.click("button:text('Refresh')")
        tab.wait_for_timeout(200)
    assert "SUCCEEDED" in tab.inner_text("table tbody")
    tab.click("table tbody button:text('Show')")
    tab.wait_for_selector(".job-detail table.labels")
    assert tab.inner_text(".job-detail table.labels tbody th") == "positive"
    shot(tab, "06-jobs")


def test_another_account_sees_none_of_them_and_a_phone_width_fits(
    page: tuple[Any, Console], site: Site
) -> None:
    tab, console = page
    console.expect_failure("/v1/models/iris-onnx", 404)
    tab.set_viewport_size(PHONE)
    open_console(tab, site, f"#key={site.bob}")
    tab.wait_for_selector("text=No models yet")
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(tab, "07-phone-other-account")
    tab.evaluate("location.hash = 'model=iris-onnx'")
    alert = tab.wait_for_selector(".error[role=alert]")
    assert "no such model" in alert.inner_text() and "Hint: " in alert.inner_text()  # message and hint
    tab.click("text=Sign out")
    tab.wait_for_selector("h1:text('Sign in')")
    assert tab.evaluate("sessionStorage.getItem('modelport.key')") is None


def test_alice_at_phone_width_reads_the_invoke_form(page: tuple[Any, Console], site: Site) -> None:
    tab, _ = page
    tab.set_viewport_size(PHONE)
    open_console(tab, site, f"#key={site.alice}&model=iris-onnx")
    tab.wait_for_selector("input[name=petal_width]")
    tab.click("button:text('Invoke')")
    tab.wait_for_selector("table.labels")
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(tab, "08-phone-invoke")


def test_a_batch_run_shows_on_the_jobs_page_and_the_model_page(page: tuple[Any, Console], site: Site) -> None:
    """iris-onnx's 150 flowers put under inputs/ of the data bucket: its event runs them (the pump)."""
    s3 = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS).client(
        "s3", endpoint_url=site.endpoint_url
    )
    flowers = (ROOT / "examples/iris-onnx/batch/flowers.csv").read_bytes()
    run = run_batch(s3, site.data_bucket, "iris-onnx", "flowers.csv", flowers, wait_s=120)
    assert run.summary["succeeded"] == 150
    tab, _ = page
    open_console(tab, site, f"#key={site.alice}&view=jobs")
    tab.wait_for_selector("h2:text('Batch runs')")
    row = tab.wait_for_selector(".batch-runs table tbody tr")
    cells = [c.inner_text() for c in row.query_selector_all("th, td")]
    model, key, status, rows, seconds, cost, updated, results, error = cells
    assert (model, key, status) == ("iris-onnx", "inputs/iris-onnx/flowers.csv", "SUCCEEDED"), cells
    assert rows.startswith("150") and "(150 / 0)" in rows and error == "", cells
    assert re.fullmatch(r"[\d.]+ (ms|s)", seconds) and re.fullmatch(r"0\.\d+", cost), cells
    assert updated and results == "Download"
    link = row.query_selector("a[aria-label='download the results of inputs/iris-onnx/flowers.csv']")
    assert link is not None and "outputs/iris-onnx/flowers.jsonl" in (link.get_attribute("href") or "")
    tab.focus(".batch-runs a[href='#model=iris-onnx']")  # by keyboard: the model's page, its own card
    tab.keyboard.press("Enter")
    tab.wait_for_selector("h1:text('iris-onnx')")
    card = tab.wait_for_selector("section[aria-labelledby=batches-title] table tbody tr")
    assert "SUCCEEDED" in card.inner_text() and "flowers.csv" in card.inner_text()
    tab.eval_on_selector("#batches-title", "el => el.scrollIntoView()")
    shot(tab, "10-model-batch-runs")
    open_console(tab, site, "#view=jobs")
    tab.wait_for_selector(".batch-runs table tbody tr")
    tab.eval_on_selector("#batches-title", "el => el.scrollIntoView()")
    shot(tab, "10-jobs-batch-runs")
