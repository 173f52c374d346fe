"""The local stack for functional tests: emulator (process mode) + edge + moto, and the test images.

Images are process images (``ProcessImages``) made from the examples, plus ``echo``: a Python predictor
that answers its input after an optional sleep - chainable (its answer is a valid request to itself), and
a runtime that can be made slow on demand for timeouts and mid-invocation kills.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.core.wire import JSON, InvocationEvent, invocation_event
from chalicelib.local.awslambda.emulator import LambdaEmulator
from chalicelib.local.edge.moto import MotoServer, start_moto
from chalicelib.local.edge.server import EdgeServer
from chalicelib.local.launchers import ProcessImages, ProcessLauncher
from chalicelib.services.intake import config_file_for_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROLE = "arn:aws:iam::123456789012:role/modelport-functions"
IRIS = "modelport/iris-onnx:v1"
ECHO = "modelport/echo:v1"
BROKEN = "modelport/broken-iris:v1"

ECHO_PREDICT = '''"""Answers its input after an optional sleep."""

import time

from chalicelib.runtime.predictor import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        output: list[float] = Input(description="echoed back"),
        sleep_s: float = Input(default=0.0, ge=0.0, le=60.0, description="seconds to sleep first"),
    ) -> list[float]:
        time.sleep(sleep_s)
        return output
'''
ECHO_CONFIG = """name: echo
framework: python
artifacts: [predict.py]
environment: {memory_mb: 256, timeout_s: 10}
"""


def iris_event(rows: list[list[float]] | None = None) -> InvocationEvent:
    return invocation_event(
        json.dumps({"rows": rows or [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]}), JSON, JSON
    )


def echo_event(values: list[float], sleep_s: float = 0.0) -> InvocationEvent:
    return invocation_event(json.dumps({"output": values, "sleep_s": sleep_s}), JSON)


def make_images(root: Path) -> ProcessImages:
    """The process images the tests run: iris-onnx, echo, and iris with a corrupt model file."""
    images = ProcessImages(root / "process-images")
    iris = EXAMPLES / "iris-onnx"
    images.write(IRIS, iris, config_file_for_dir(iris))
    broken = images.write(BROKEN, iris, config_file_for_dir(iris))
    (broken.model_dir / "model.onnx").write_bytes(b"\x08not a model")
    echo = root / "echo"
    echo.mkdir()
    (echo / "predict.py").write_text(ECHO_PREDICT, encoding="utf-8")
    (echo / "modelport.yaml").write_text(ECHO_CONFIG, encoding="utf-8")
    images.write(ECHO, echo, config_file_for_dir(echo))
    return images


@dataclass
class Stack:
    emulator: LambdaEmulator
    edge: EdgeServer
    moto: MotoServer
    images: ProcessImages
    session: boto3.session.Session
    saved_moto_port: str | None

    @property
    def url(self) -> str:
        return self.edge.url

    def client(self, service: str, **config: Any) -> Any:
        """A client of the edge; no retries, so a test sees each answer as the edge gave it."""
        options: dict[str, Any] = {"retries": {"max_attempts": 0}, **config}
        return self.session.client(service, endpoint_url=self.url, config=Config(**options))

    def stop(self) -> None:
        self.edge.stop()
        self.moto.stop()
        self.emulator.shutdown()
        if self.saved_moto_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = self.saved_moto_port


def start_stack(root: Path, **emulator_options: Any) -> Stack:
    images = make_images(root)
    emulator = LambdaEmulator(ProcessLauncher(images), **emulator_options)
    edge = EdgeServer(0, "", emulator).start()
    saved = os.environ.get("MOTO_PORT")
    moto = start_moto(edge.port)
    edge.moto_url = moto.url
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return Stack(emulator, edge, moto, images, session, saved)


def create(lambda_client: Any, name: str, image: str, **options: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"MemorySize": 512, "Timeout": 10, **options}
    return dict(
        lambda_client.create_function(
            FunctionName=name, Role=ROLE, PackageType="Image", Code={"ImageUri": image}, **args
        )
    )


def invoke(
    lambda_client: Any, name: str, event: dict[str, Any], **options: Any
) -> tuple[dict[str, Any], Any]:
    """(the response's metadata, the payload parsed)."""
    response = lambda_client.invoke(FunctionName=name, Payload=json.dumps(event), **options)
    return response, json.loads(response["Payload"].read() or b"null")
