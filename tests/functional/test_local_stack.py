"""The local stack running as ``modelport up`` runs it, driven over HTTP (the API) and boto3 (the edge).

One stack for the module: moto + the edge + the Lambda emulator + the API + the event pump, with real
containers when a docker engine answers (CI must have one) and processes otherwise. Models are deployed
the way a user deploys them (``chalicelib.client.deploy``: bundle, presigned upload, S3 -> SQS -> the
pump -> the app's handler), so each test crosses every hop of the real path.

The failure tests come last: the final one stops the emulator under a request.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from chalicelib.client import (
    ApiError,
    Client,
    Connection,
    deploy,
    function_names,
    invoke,
    log_lines,
    post_form,
)
from chalicelib.demo import run_demo
from chalicelib.local.stack import LOCAL_CREDENTIALS, LocalStack
from tests.functional.local_stack import ECHO_PREDICT

pytestmark = [pytest.mark.functional, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ECHO_CONFIG = """name: echo
framework: python
artifacts: [predict.py]
environment: {memory_mb: 256, timeout_s: 2}
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    launcher = "container" if _engine_answers() else "process"
    if launcher == "process" and os.environ.get("CI"):
        pytest.fail("CI must have a docker engine (.ci/run starts dockerd)")
    running = LocalStack(edge_port=0, api_port=0, launcher=launcher, registry=False).start()
    yield running
    running.stop()


def _engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def admin(stack: LocalStack) -> Client:
    return Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))


@pytest.fixture(scope="module")
def aws(stack: LocalStack) -> Any:
    session = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS)

    def client(service: str) -> Any:
        return session.client(
            service, endpoint_url=stack.endpoint_url, config=Config(retries={"max_attempts": 0})
        )

    return client


@pytest.fixture(scope="module")
def iris(admin: Client) -> dict[str, Any]:
    outcome = deploy(admin, EXAMPLES / "iris-onnx")
    assert outcome.status == "READY", outcome.reason
    assert outcome.config is not None
    return outcome.config


@pytest.fixture(scope="module")
def echo(admin: Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("echo")
    (directory / "predict.py").write_text(ECHO_PREDICT, encoding="utf-8")
    (directory / "modelport.yaml").write_text(ECHO_CONFIG, encoding="utf-8")
    outcome = deploy(admin, directory)
    assert outcome.status == "READY", outcome.reason
    assert outcome.config is not None
    return outcome.config


def rows(*values: list[float]) -> bytes:
    return json.dumps({"rows": list(values)}).encode()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_an_uploaded_model_is_deployed_as_chained_container_image_functions(
    stack: LocalStack, iris: dict[str, Any], aws: Any
) -> None:
    deployment, container = iris["deployment"], iris["container"]
    assert deployment["mode"] == "chained"  # auto: its post steps draw a chart, shared stages are there
    roles = {f["role"]: f for f in deployment["functions"]}
    assert set(roles) == {"pre", "model", "post"}
    assert roles["model"]["function_name"] == "modelport-iris-onnx-model"
    assert roles["pre"]["function_name"].startswith("modelport-steps-")
    for role, fn in roles.items():
        got = aws("lambda").get_function(FunctionName=fn["function_name"], Qualifier=fn["version"])
        assert got["Configuration"]["PackageType"] == "Image"
        want = container["image_uri"] if role == "model" else container["steps_image"]
        assert got["Code"]["ImageUri"] == want
    live = aws("lambda").get_alias(FunctionName="modelport-iris-onnx-model", Name="live")
    assert live["FunctionVersion"] == roles["model"]["version"]
    machine = aws("stepfunctions").describe_state_machine(stateMachineArn=deployment["state_machine_arn"])
    states = json.loads(machine["definition"])["States"]  # (moto reports every machine as STANDARD)
    tasks = [states[n]["Parameters"]["FunctionName"] for n in ("Preprocess", "Predict", "Postprocess")]
    assert tasks == [f"{roles[r]['function_arn']}:{roles[r]['version']}" for r in ("pre", "model", "post")]
    # the model's image carries no plotting or imaging packages; the shared steps image does
    model_packages = environment_packages(stack, container["environment_image"])
    assert "onnxruntime" in model_packages and not {"matplotlib", "pillow"} & model_packages
    association = aws("dynamodb").scan(TableName="modelport-associations")["Items"]
    assert any(item.get("image_uri", {}).get("S") == container["image_uri"] for item in association)


def environment_packages(stack: LocalStack, environment_image: str) -> set[str]:
    if stack.launcher == "container":
        import docker

        labels = docker.from_env().images.get(environment_image).labels
        text = labels["dev.modelport.packages"]
    else:
        from chalicelib.docker import cache_root
        from chalicelib.docker.process import ENV_MARKER

        key = environment_image.removeprefix("process-env/")
        text = (cache_root() / "process-envs" / key / ENV_MARKER).read_text()
    return {req.split("==")[0].lower() for req in text.split()}


def test_invoke_answers_json_and_the_picture_through_every_hop(iris: dict[str, Any], admin: Client) -> None:
    answer = invoke(admin, "iris-onnx", rows([5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]),
                    content_type="application/json", accept="application/json")  # fmt: skip
    doc = answer.json()
    assert [p[0]["label"] for p in doc["predictions"]] == ["setosa", "virginica"]
    assert doc["figure"]["media_type"] == "image/png"
    timing = answer.headers["server-timing"]
    assert all(f"{stage};dur=" in timing for stage in ("decode", "pre", "model", "post", "post.bar_chart"))

    picture = invoke(admin, "iris-onnx", rows([5.1, 3.5, 1.4, 0.2]), content_type="application/json",
                     accept="image/png")  # fmt: skip
    assert picture.headers["content-type"] == "image/png" and png_size(picture.body) == (640, 360)
    csv = invoke(admin, "iris-onnx", b"5.1,3.5,1.4,0.2\n", content_type="text/csv", accept="application/json")
    assert csv.json()["predictions"][0][0]["label"] == "setosa"


def test_a_bad_request_is_refused_before_any_function_runs(
    stack: LocalStack, iris: dict[str, Any], admin: Client, aws: Any
) -> None:
    time.sleep(1.0)  # the log shipper's interval: earlier tests' lines are in
    before = _report_lines(aws, "modelport-iris-onnx-model")
    with pytest.raises(ApiError) as err:
        invoke(admin, "iris-onnx", rows([5.1, 3.5]), content_type="application/json")
    assert err.value.status == 400 and "/rows/0" in str(err.value)
    too_big = b"x" * (6 * 1024 * 1024 + 1)
    with pytest.raises(ApiError) as err:  # sent as it is: past what a Lambda event carries
        admin.request("POST", "/v1/models/iris-onnx/invoke", too_big, {"Content-Type": "text/csv"})
    assert err.value.status == 413 and "6 MB" in str(err.value) and "/v1/uploads" in str(err.value)
    with pytest.raises(ApiError) as err:  # the client uploads it and sends a reference: still checked first
        invoke(admin, "iris-onnx", too_big, content_type="text/csv")
    assert err.value.status == 400 and "malformed CSV" in str(err.value)
    with pytest.raises(ApiError) as err:
        invoke(admin, "iris-onnx", rows([1, 2, 3, 4]), content_type="application/json", accept="text/html")
    assert err.value.status == 406
    time.sleep(1.0)  # the log shipper's interval: nothing new must arrive
    assert _report_lines(aws, "modelport-iris-onnx-model") == before


def test_function_output_reaches_cloudwatch_logs(iris: dict[str, Any], admin: Client, aws: Any) -> None:
    invoke(admin, "iris-onnx", rows([5.1, 3.5, 1.4, 0.2]), content_type="application/json")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _report_lines(aws, "modelport-iris-onnx-model"):
        time.sleep(0.2)
    lines = _report_lines(aws, "modelport-iris-onnx-model")
    assert lines and "Duration:" in lines[-1] and "Memory Size: 512 MB" in lines[-1]
    assert function_names(admin, "iris-onnx") == tuple(
        f["function_name"] for f in iris["deployment"]["functions"]
    )


def _report_lines(aws: Any, function: str) -> list[str]:
    found = log_lines(aws("logs"), (function,))
    return [line for fn, _, line in found if fn == function and line.startswith("REPORT")]


def test_another_account_sees_no_model_and_unknown_models_are_404(
    iris: dict[str, Any], admin: Client
) -> None:
    bob = admin.json("POST", "/v1/accounts", {"name": "bob"})
    as_bob = Client(Connection(admin.conn.api_url, bob["api_key"]))
    for client, name in ((as_bob, "iris-onnx"), (admin, "no-such-model")):
        with pytest.raises(ApiError) as err:
            invoke(client, name, rows([5.1, 3.5, 1.4, 0.2]), content_type="application/json")
        assert err.value.status == 404


def test_a_failed_version_answers_409_with_its_reason(iris: dict[str, Any], admin: Client) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = (EXAMPLES / "iris-onnx" / "modelport.yaml").read_bytes()
        info = tarfile.TarInfo("modelport.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))  # and no model file
    bundle = buf.getvalue()
    created = admin.json("POST", "/v1/models/iris-onnx/versions", {"size_bytes": len(bundle)})
    version = created["version"]["version"]
    post_form(created["upload"]["url"], created["upload"]["fields"], bundle)
    deadline = time.monotonic() + 60
    while (record := admin.json("GET", f"/v1/models/iris-onnx/versions/{version}"))["status"] != "FAILED":
        assert time.monotonic() < deadline, record
        time.sleep(0.2)
    with pytest.raises(ApiError) as err:
        invoke(
            admin, "iris-onnx", rows([5.1, 3.5, 1.4, 0.2]), content_type="application/json", version=version
        )
    assert err.value.status == 409 and "FAILED" in str(err.value) and record["reason"] in str(err.value)
    # the default version is untouched
    assert (
        invoke(admin, "iris-onnx", rows([5.1, 3.5, 1.4, 0.2]), content_type="application/json").status == 200
    )


def echo_body(values: list[float], sleep_s: float = 0.0) -> bytes:
    return json.dumps({"output": values, "sleep_s": sleep_s}).encode()


def test_a_timeout_is_504_and_the_environment_is_replaced(echo: dict[str, Any], admin: Client) -> None:
    assert invoke(admin, "echo", echo_body([1.0]), content_type="application/json").json() == {
        "output": [1.0]
    }
    with pytest.raises(ApiError) as err:
        invoke(admin, "echo", echo_body([2.0], sleep_s=5), content_type="application/json")
    assert err.value.status == 504 and "timed out" in str(err.value)
    assert invoke(admin, "echo", echo_body([3.0]), content_type="application/json").json() == {
        "output": [3.0]
    }


def test_an_environment_killed_mid_invocation_is_502_then_a_fresh_one_serves(
    stack: LocalStack, echo: dict[str, Any], admin: Client
) -> None:
    emulator = stack.edge.emulator if stack.edge else None
    assert emulator is not None
    invoke(admin, "echo", echo_body([0.0]), content_type="application/json")  # warm
    idle_by = time.monotonic() + 5  # the warm environment is released just after its answer is sent:
    while any(e.busy for e in emulator.environments("modelport-echo")):  # wait, or the slow call scales
        assert time.monotonic() < idle_by  # out and the loop below kills the one still releasing
        time.sleep(0.01)
    started = emulator.started("modelport-echo")
    outcome: dict[str, Any] = {}

    def slow() -> None:
        try:
            invoke(admin, "echo", echo_body([1.0], sleep_s=1.5), content_type="application/json")
        except ApiError as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=slow)
    caller.start()
    deadline = time.monotonic() + 5
    while not any(e.busy for e in emulator.environments("modelport-echo")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    busy = next(e for e in emulator.environments("modelport-echo") if e.busy)
    assert busy.pid is not None
    os.kill(busy.pid, signal.SIGKILL)
    caller.join(10)
    assert outcome["error"].status == 502 and "Runtime" in str(outcome["error"])
    assert invoke(admin, "echo", echo_body([4.0]), content_type="application/json").json() == {
        "output": [4.0]
    }
    assert emulator.started("modelport-echo") > started


def test_the_demo_deploys_and_answers_every_example(
    stack: LocalStack, admin: Client, aws: Any, tmp_path: Path
) -> None:
    dirs = sorted(p.parent for p in EXAMPLES.glob("*/modelport.yaml"))
    demo = run_demo(admin, dirs, tmp_path, warm_calls=3, data=(aws("s3"), stack.outputs["data_bucket"]))
    problems = {row.name: row.problem or [a.problem for a in row.answers] for row in demo if not row.ok}
    assert not problems
    assert {row.name for row in demo} == {d.name for d in dirs}
    modes = {row.name: row.mode for row in demo}
    assert modes == {
        "breast-cancer-xgboost": "chained",
        "diabetes-lightgbm": "chained", "digits-onnx": "fused",  # image requests stay fused (6 MB)
        "iris-onnx": "chained", "iris-skops": "chained", "sentiment-predictor": "fused",
        "iris-skops-onnx": "fused",  # runtime: onnx, labels only: no step draws
    }  # fmt: skip
    for row in demo:
        assert row.answers and all(a.status == 200 and a.path and a.path.is_file() for a in row.answers)
        assert len(row.warm_ms) == 3
    batches = {row.name: row.batch for row in demo if row.batch}
    assert batches == {"iris-onnx": [batches["iris-onnx"][0]]} and "150/150 rows" in batches["iris-onnx"][0]
    lines = (tmp_path / "iris-onnx" / "flowers.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in lines] == list(range(150))
    assert all(json.loads(line)["result"]["predictions"] for line in lines)
    pictures = [a.path for row in demo for a in row.answers if a.path and a.path.suffix == ".png"]
    assert len(pictures) >= 4 and all(png_size(p.read_bytes())[0] == 640 for p in pictures)


def test_deleting_a_version_deletes_its_state_machine_and_function_versions(
    iris: dict[str, Any], admin: Client, aws: Any
) -> None:
    outcome = deploy(admin, EXAMPLES / "iris-onnx")  # a second, non-default version
    assert outcome.status == "READY" and outcome.config is not None
    deployment = outcome.config["deployment"]
    model = next(f for f in deployment["functions"] if f["role"] == "model")
    admin.request("DELETE", f"/v1/models/iris-onnx/versions/{outcome.version}")
    with pytest.raises(aws("stepfunctions").exceptions.StateMachineDoesNotExist):
        aws("stepfunctions").describe_state_machine(stateMachineArn=deployment["state_machine_arn"])
    with pytest.raises(aws("lambda").exceptions.ResourceNotFoundException):
        aws("lambda").get_function(FunctionName=model["function_name"], Qualifier=model["version"])
    shared = next(f for f in deployment["functions"] if f["role"] == "pre")  # other models use it
    assert aws("lambda").get_function(FunctionName=shared["function_name"], Qualifier=shared["version"])
    assert (
        invoke(admin, "iris-onnx", rows([5.1, 3.5, 1.4, 0.2]), content_type="application/json").status == 200
    )


def test_concurrent_uploads_reserve_distinct_versions(stack: LocalStack, admin: Client) -> None:
    got: list[int] = []

    def reserve() -> None:
        created = admin_copy().json("POST", "/v1/models/many/versions", {"size_bytes": 10})
        got.append(created["version"]["version"])

    def admin_copy() -> Client:  # one connection per thread
        return Client(admin.conn)

    admin.json("POST", "/v1/models/many/versions", {"size_bytes": 10})  # creates the model
    threads = [threading.Thread(target=reserve) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(got) == list(range(2, 14))


def test_stopping_the_emulator_or_moto_under_requests_is_an_error_not_a_hang(
    stack: LocalStack, echo: dict[str, Any], admin: Client
) -> None:
    emulator = stack.edge.emulator if stack.edge else None
    assert emulator is not None
    outcome: dict[str, Any] = {}

    def slow() -> None:
        began = time.monotonic()
        try:
            invoke(admin, "echo", echo_body([1.0], sleep_s=1.5), content_type="application/json")
        except ApiError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - began

    caller = threading.Thread(target=slow)
    caller.start()
    time.sleep(0.3)
    emulator.shutdown()
    caller.join(20)
    assert not caller.is_alive()
    assert outcome["error"].status == 502 and outcome["seconds"] < 10
    began = time.monotonic()
    with pytest.raises(ApiError) as err:  # and the next one too, at once
        invoke(admin, "echo", echo_body([1.0]), content_type="application/json")
    assert err.value.status == 502 and time.monotonic() - began < 10

    assert stack.moto is not None
    stack.moto.stop()  # and moto: what needs a table answers 503 within the clients' bounded retries
    time.sleep(2.5)  # past the key cache, so the authorizer's lookup meets the outage too
    for path in ("/v1/models/iris-onnx/versions", "/v1/accounts/me"):
        began = time.monotonic()
        with pytest.raises(ApiError) as err:
            admin.json("GET", path)
        assert err.value.status == 503 and "did not answer" in str(err.value)
        assert time.monotonic() - began < 15
