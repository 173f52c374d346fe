"""The Lambda sandbox staging through S3 on a moto server (its calls: tests/unit/test_aws_sandbox.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from chalicelib.runtime.probe import handler


@pytest.mark.functional
def test_a_staged_artifact_reaches_the_probe_handler_by_presigned_url(
    tmp_path: Path, moto_server: str, aws_session: boto3.session.Session
) -> None:
    from chalicelib.aws.sandbox import S3Staging

    s3 = aws_session.client("s3", endpoint_url=moto_server)
    bucket = f"t{uuid.uuid4().hex[:10]}-bundles"
    s3.create_bucket(Bucket=bucket)
    iris = load_iris()
    path = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=300).fit(iris.data, iris.target), path)
    url, _ = S3Staging(s3, bucket).stage(path)
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert key.startswith("probes/") and key.endswith("/artifact")
    # the real probe handler, on the test's own benign model, fetching the way the probe function does
    doc = handler({"rel": "model.joblib", "format": "pickle", "artifact_url": url}, None)
    assert doc["contract"]["model_type"] == "sklearn.linear_model.LogisticRegression"
    local_file = {"rel": "model.joblib", "format": "pickle", "artifact_url": "file:///etc/passwd"}
    assert handler(local_file, None) == {"error": {"code": "not_loadable"}}
