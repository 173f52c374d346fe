"""The Open Inference Protocol v2 surface through a real client of it: NVIDIA's ``tritonclient.http``.

On the local stack with real containers: server metadata, liveness and readiness, model metadata and
readiness (default and per version), inference in JSON and with the binary tensor data extension (FP32 and
BYTES inputs, binary and JSON outputs, requested outputs), and OIP errors as the client reads them.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from chalicelib.client import Client, Connection, deploy
from chalicelib.local.stack import LocalStack
from tests.functional.test_local_stack import EXAMPLES, _engine_answers

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = [pytest.mark.functional, pytest.mark.slow]

FLOWERS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    launcher = "container" if _engine_answers() else "process"
    if launcher == "process" and os.environ.get("CI"):
        pytest.fail("CI must have a docker engine (.ci/run starts dockerd)")
    running = LocalStack(edge_port=0, api_port=0, launcher=launcher, registry=False).start()
    admin = Client(Connection(running.api_url, running.admin_key, running.endpoint_url))
    for name in ("iris-onnx", "digits-onnx"):
        outcome = deploy(admin, EXAMPLES / name)
        assert outcome.status == "READY", outcome.reason
    yield running
    running.stop()


@pytest.fixture(scope="module")
def triton(stack: LocalStack) -> Any:
    return httpclient.InferenceServerClient(url=stack.api_url.removeprefix("http://").rstrip("/"))


@pytest.fixture(scope="module")
def auth(stack: LocalStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin_key}"}


@pytest.fixture(scope="module")
def binary(auth: dict[str, str]) -> dict[str, str]:
    """What a binary exchange through API Gateway needs said: its binary media type, both ways."""
    return {**auth, "Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}


def flowers(binary: bool) -> list[Any]:
    inputs = []
    for i, name in enumerate(FEATURES):
        tensor = httpclient.InferInput(name, [2], "FP32")
        tensor.set_data_from_numpy(FLOWERS[:, i].copy(), binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_server_metadata_liveness_and_readiness(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    server = triton.get_server_metadata()
    assert server["name"] == "modelport" and "binary_tensor_data" in server["extensions"]


def test_model_metadata_and_readiness_by_default_and_by_version(triton: Any, auth: dict[str, str]) -> None:
    assert triton.is_model_ready("iris-onnx", headers=auth)
    assert triton.is_model_ready("iris-onnx", "1", headers=auth)
    assert not triton.is_model_ready("iris-onnx", "7", headers=auth)
    assert not triton.is_model_ready("no-such-model", headers=auth)
    meta = triton.get_model_metadata("iris-onnx", headers=auth)
    assert meta == triton.get_model_metadata("iris-onnx", "1", headers=auth)
    assert [t["name"] for t in meta["inputs"]] == FEATURES and meta["versions"] == ["1"]


def test_json_and_binary_inference_give_the_same_answer(
    triton: Any, auth: dict[str, str], binary: dict[str, str]
) -> None:
    as_json = triton.infer(
        "iris-onnx", flowers(False), headers=auth,
        outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in ("label", "score")],
    )  # fmt: skip
    as_binary = triton.infer("iris-onnx", flowers(True), headers=binary, model_version="1")  # all binary
    # Binary inputs, but no Accept for a binary answer: the outputs come as JSON, read the same.
    unsaid = triton.infer("iris-onnx", flowers(True), headers=auth)
    assert all("data" in o for o in unsaid.get_response()["outputs"])
    np.testing.assert_array_equal(unsaid.as_numpy("score"), as_binary.as_numpy("score"))
    assert as_json.get_response()["model_name"] == "iris-onnx"
    assert [o["name"] for o in as_json.get_response()["outputs"]] == ["label", "score"]  # as requested
    for name in ("label", "score"):
        assert as_binary.get_output(name)["parameters"]["binary_data_size"] > 0
    np.testing.assert_array_equal(as_json.as_numpy("score"), as_binary.as_numpy("score"))
    # BYTES: the client gives JSON elements as str, binary ones as bytes
    assert as_json.as_numpy("label").tolist() == [
        [b.decode() for b in row] for row in as_binary.as_numpy("label")
    ]
    scores = as_binary.as_numpy("score")
    assert scores.dtype == np.float32 and scores.shape == (2, 3)
    labels = as_binary.as_numpy("label")
    assert labels[0][0] == b"setosa" and labels[1][0] == b"virginica"
    assert base64.b64decode(as_binary.as_numpy("figure")[0]).startswith(b"\x89PNG\r\n")


def test_a_binary_bytes_input_carries_an_image(triton: Any, binary: dict[str, str]) -> None:
    png = (EXAMPLES / "digits-onnx" / "samples" / "digit-7.png").read_bytes()
    image = httpclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([base64.b64encode(png)], dtype=np.object_), binary_data=True)
    result = triton.infer(
        "digits-onnx", [image], headers=binary, outputs=[httpclient.InferRequestedOutput("label")]
    )
    assert result.as_numpy("label")[0][0] == b"7"
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]


def test_errors_reach_the_client_as_oip_errors(
    triton: Any, auth: dict[str, str], binary: dict[str, str]
) -> None:
    with pytest.raises(InferenceServerException, match=r"\[404\] no such model"):
        triton.infer("no-such-model", flowers(False), headers=auth)
    with pytest.raises(InferenceServerException, match="unknown output"):
        triton.infer(
            "iris-onnx", flowers(True), headers=binary, outputs=[httpclient.InferRequestedOutput("nope")]
        )
    wrong = httpclient.InferInput("sepal_length", [3], "FP32")  # 3 values said, 2 sent
    wrong._raw_data = FLOWERS[:, 0].tobytes()
    wrong._parameters = {"binary_data_size": len(wrong._raw_data)}
    with pytest.raises(InferenceServerException, match="needs 12"):
        triton.infer("iris-onnx", [wrong, *flowers(True)[1:]], headers=binary)
