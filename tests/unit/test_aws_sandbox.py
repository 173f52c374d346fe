"""The Lambda sandbox adapter: the probe function it creates, the event it sends, the answers it accepts."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import joblib
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from chalicelib.aws.sandbox import HANDLER, INLINE_MAX_BYTES, LambdaSandbox, function_name
from chalicelib.core.config import parse_config
from chalicelib.core.environment import ResolvedEnvironment, resolve_environment
from chalicelib.core.errors import ArtifactError, Unavailable
from chalicelib.core.probe import ProbeRequest
from chalicelib.runtime.probe import handler

ROLE = "arn:aws:iam::123456789012:role/modelport-probe"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelport-steps:abc"
CONFIG = parse_config({"name": "m", "allow_pickle": True})
ENV = resolve_environment(CONFIG, "sklearn")


def _image(env: ResolvedEnvironment, progress: Callable[[str], None]) -> str:
    return IMAGE


class FakeLambda:
    """The Lambda API calls the adapter makes; ``answer`` plays the probe function."""

    def __init__(self, answer: Callable[[dict[str, Any]], tuple[bytes, str | None]]) -> None:
        self.answer = answer
        self.functions: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    def get_function(self, FunctionName: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        if FunctionName not in self.functions:
            raise ClientError(
                {"Error": {"Code": "ResourceNotFoundException", "Message": "no"}}, "GetFunction"
            )
        return {"Code": {"ImageUri": self.functions[FunctionName]["Code"]["ImageUri"]}}

    def create_function(self, **params: Any) -> dict[str, Any]:
        self.functions[params["FunctionName"]] = params
        return {}

    def update_function_code(self, FunctionName: str, ImageUri: str) -> dict[str, Any]:  # noqa: N803
        self.functions[FunctionName]["Code"] = {"ImageUri": ImageUri}
        return {}

    def get_function_configuration(self, FunctionName: str) -> dict[str, Any]:  # noqa: N803
        return {"State": "Active", "LastUpdateStatus": "Successful"}

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803
        assert InvocationType == "RequestResponse"
        event = json.loads(Payload)
        self.events.append(event)
        body, error = self.answer(event)
        response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(body)}
        if error:
            response["FunctionError"] = error
        return response


def _request(tmp_path: Path, data: bytes) -> ProbeRequest:
    (tmp_path / "model.pkl").write_bytes(data)
    return ProbeRequest(config=CONFIG, artifact=tmp_path / "model.pkl", rel="model.pkl", format="pickle")


def test_a_small_artifact_travels_base64_to_the_probe_handler(tmp_path: Path) -> None:
    iris = load_iris()
    buf = io.BytesIO()
    joblib.dump(LogisticRegression(max_iter=300).fit(iris.data, iris.target), buf)
    # the fake runs the real probe handler: a benign model, so opening it here is harmless
    fake = FakeLambda(lambda event: (json.dumps(handler(event, None)).encode(), None))
    sandbox = LambdaSandbox(fake, ROLE, probe_image=_image)
    contract = sandbox.probe(_request(tmp_path, buf.getvalue()))
    assert contract.model_type == "sklearn.linear_model.LogisticRegression"
    assert contract.classes == (0, 1, 2)
    (event,) = fake.events
    assert set(event) == {"rel", "format", "trusted_types", "artifact_b64"}
    created = fake.functions[function_name(ENV)]
    assert created["FunctionName"] == "modelport-probe-" + ENV.fingerprint.removeprefix("sha256:")[:12]
    assert created["Role"] == ROLE and created["Timeout"] <= 60
    assert created["ImageConfig"] == {"Command": [HANDLER]}
    assert "Environment" not in created  # no variables, so no secrets
    sandbox.probe(_request(tmp_path, buf.getvalue()))
    assert len(fake.events) == 2  # the function is reused


def test_a_large_artifact_travels_as_a_staged_url_that_is_deleted(tmp_path: Path) -> None:
    staged: list[str] = []

    class Staging:
        def stage(self, path: Path) -> tuple[str, Callable[[], None]]:
            staged.append(path.name)
            return "https://bucket.example/probes/x?sig", lambda: staged.remove(path.name)

    fake = FakeLambda(lambda event: (b'{"error": {"code": "not_fitted"}}', None))
    sandbox = LambdaSandbox(fake, ROLE, probe_image=_image, staging=Staging())
    with pytest.raises(ArtifactError, match=r"^model\.pkl holds an estimator that is not fitted"):
        sandbox.probe(_request(tmp_path, b"\0" * (INLINE_MAX_BYTES + 1)))
    (event,) = fake.events
    assert event["artifact_url"] == "https://bucket.example/probes/x?sig" and "artifact_b64" not in event
    assert staged == []


@pytest.mark.parametrize(
    ("body", "error", "expected"),
    [
        (b'{"errorMessage": "Task timed out after 60.00 seconds"}', "Unhandled", "timed out"),
        (
            b'{"errorType": "Runtime.ExitError", "errorMessage": "signal: killed"}',
            "Unhandled",
            "ran out of memory",
        ),
        (b'{"errorMessage": "MODELPORT_ADMIN_KEY=secret"}', "Unhandled", "crashed"),
        (b'{"contract": {"framework": "onnx"}, "x": 1}', None, "returned no valid contract"),
    ],
)
def test_function_failures_become_fixed_messages(
    tmp_path: Path, body: bytes, error: str | None, expected: str
) -> None:
    sandbox = LambdaSandbox(FakeLambda(lambda event: (body, error)), ROLE, probe_image=_image)
    with pytest.raises(ArtifactError) as caught:
        sandbox.probe(_request(tmp_path, pickle.dumps(1)))
    assert str(caught.value).startswith(f"model.pkl {expected} in the sandbox (error id ")
    assert "secret" not in str(caught.value)


def test_throttling_is_unavailable(tmp_path: Path) -> None:
    def throttled(event: dict[str, Any]) -> tuple[bytes, str | None]:
        raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "slow"}}, "Invoke")

    sandbox = LambdaSandbox(FakeLambda(throttled), ROLE, probe_image=_image)
    with pytest.raises(
        Unavailable, match=r"probe function is busy or unavailable \(TooManyRequestsException\)"
    ):
        sandbox.probe(_request(tmp_path, pickle.dumps(1)))


def test_the_calls_pass_botocore_parameter_validation(tmp_path: Path) -> None:
    client = boto3.client(
        "lambda", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    name = function_name(ENV)
    with Stubber(client) as stub:
        stub.add_client_error(
            "get_function", "ResourceNotFoundException", expected_params={"FunctionName": name}
        )
        stub.add_response("create_function", {}, expected_params={
            "FunctionName": name, "Role": ROLE, "PackageType": "Image", "Code": {"ImageUri": IMAGE},
            "ImageConfig": {"Command": [HANDLER]}, "Timeout": 60, "MemorySize": 1024,
            "Architectures": [ENV.architecture], "Description": ANY,
        })  # fmt: skip
        stub.add_response(
            "get_function_configuration",
            {"State": "Active", "LastUpdateStatus": "Successful"},
            expected_params={"FunctionName": name},
        )
        stub.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": io.BytesIO(b'{"error": {"code": "not_fitted"}}')},  # type: ignore[dict-item]
            expected_params={"FunctionName": name, "InvocationType": "RequestResponse", "Payload": ANY},
        )
        with pytest.raises(ArtifactError, match="not fitted"):
            LambdaSandbox(client, ROLE, probe_image=_image).probe(_request(tmp_path, pickle.dumps(1)))
        stub.assert_no_pending_responses()
