"""The boto3 adapters raise a backend that did not answer as the domain's ``Unavailable`` (the API's 503)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib.aws.dynamodb import DynamoModelStore
from chalicelib.aws.s3 import S3ArtifactStore
from chalicelib.core.errors import NotFound, Unavailable


class Down:
    """A boto3 client whose every call fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> Any:
            raise self.error

        return call


def server_error(status: int, code: str = "ServiceUnavailable") -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetItem")


def test_a_connection_failure_is_unavailable_with_the_apis_message() -> None:
    store = DynamoModelStore("models", Down(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")))
    with pytest.raises(Unavailable) as raised:
        store.get_model("iris")
    assert raised.value.message == "a backing service cannot be reached (EndpointConnectionError)"
    assert raised.value.hint == "try again" and raised.value.http_status == 503
    assert isinstance(raised.value.__cause__, EndpointConnectionError)  # kept for the log


def test_a_5xx_is_unavailable_and_a_4xx_passes_unchanged(tmp_path: Path) -> None:
    with pytest.raises(
        Unavailable, match=r"^a backing service did not answer \(GetItem: ServiceUnavailable\)"
    ):
        DynamoModelStore("models", Down(server_error(503))).get_model("iris")
    with pytest.raises(ClientError):  # a bug or a missing table: not an outage
        DynamoModelStore("models", Down(server_error(400, "ValidationException"))).get_model("iris")
    with pytest.raises(NotFound):  # the adapter's own translation still comes first
        S3ArtifactStore("bucket", Down(server_error(404, "NoSuchKey"))).head("a/b")
    with pytest.raises(Unavailable):
        S3ArtifactStore("bucket", Down(server_error(500, "InternalError"))).download(
            "a/b", tmp_path / "x", max_bytes=1
        )
