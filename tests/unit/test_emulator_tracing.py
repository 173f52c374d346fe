"""The local Lambda emulator keeps the X-Ray tracing mode a function was given (it traces nothing), so the
deploy worker's "update if different" finds nothing to change on the next deploy."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.local.awslambda.emulator import LambdaEmulator
from chalicelib.local.awslambda.models import LambdaError

IMAGE = "127.0.0.1:5000/modelport-traced:v1"
ROLE = "arn:aws:iam::123456789012:role/modelport-functions"


class NoLauncher:
    """A launcher for the control API only: images have a digest, nothing is ever started."""

    kind = "none"

    def code_sha256(self, image_uri: str) -> str:
        return "0" * 64

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing is invoked here")


def test_the_tracing_mode_is_kept_as_given_at_create_and_update() -> None:
    with LambdaEmulator(NoLauncher()) as emulator:
        request = {"FunctionName": "modelport-traced", "Role": ROLE, "PackageType": "Image",
                   "Code": {"ImageUri": IMAGE}}  # fmt: skip
        emulator.create_function({**request, "TracingConfig": {"Mode": "Active"}})
        got = emulator.get_function("modelport-traced")["Configuration"]
        assert got["TracingConfig"] == {"Mode": "Active"}
        emulator.update_function_configuration("modelport-traced", {"TracingConfig": {"Mode": "PassThrough"}})
        assert emulator.get_function_configuration("modelport-traced")["TracingConfig"] == {
            "Mode": "PassThrough"
        }
        emulator.update_function_configuration("modelport-traced", {"MemorySize": 256})  # kept when unsaid
        assert (
            emulator.get_function_configuration("modelport-traced")["TracingConfig"]["Mode"] == "PassThrough"
        )
        emulator.create_function({**request, "FunctionName": "modelport-untraced"})
        assert emulator.get_function_configuration("modelport-untraced")["TracingConfig"] == {
            "Mode": "PassThrough"
        }
        with pytest.raises(LambdaError, match=r"TracingConfig\.Mode"):
            emulator.update_function_configuration("modelport-traced", {"TracingConfig": {"Mode": "On"}})
