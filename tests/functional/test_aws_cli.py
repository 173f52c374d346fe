"""``modelport aws deploy|destroy`` against moto's CloudFormation (which creates the tables, queues, ECR
repository and roles it supports; every call is checked against botocore's service models on the way), and
the failure paths through botocore's Stubber (which validates the parameters against the same models)."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner
from moto import mock_aws

from chalicelib.aws.cloudformation import Package, Stack, deploy, destroy, stage_settings
from chalicelib.aws.template import artifact_bucket
from chalicelib.cli import cli
from chalicelib.core.errors import ConfigError

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelport-deploy-worker@sha256:" + "a" * 64


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


@pytest.fixture
def packaged(tmp_path: Path) -> Package:
    """A package as ``package`` writes it, with an empty Chalice part (moto cannot expand SAM)."""
    chalice = tmp_path / "chalice"
    chalice.mkdir()
    with zipfile.ZipFile(chalice / "deployment.zip", "w") as zf:
        zf.writestr("app.py", "")
    (chalice / "sam.json").write_text(json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": {}}))
    (tmp_path / "template.json").write_text("{}")
    size = (chalice / "deployment.zip").stat().st_size
    return Package(tmp_path / "template.json", chalice / "sam.json", chalice / "deployment.zip", size, 0.0)


def test_deploy_creates_the_stack_pushes_the_worker_and_destroy_keeps_the_data(
    aws: boto3.session.Session, packaged: Package
) -> None:
    lines: list[str] = []
    built: list[str] = []

    def worker_image(settings: Any, session: Any, registry: str, progress: Any) -> str:
        repositories = session.client("ecr").describe_repositories()["repositories"]
        built.append(registry)  # the stack's repository exists before the image is pushed
        assert "modelport-deploy-worker" in [r["repositoryName"] for r in repositories]
        return IMAGE

    done = deploy(
        "dev", lines.append, session=aws, worker_image=worker_image, packaged=packaged, sleep=lambda s: None
    )
    assert done.stack == "modelport-dev"
    assert built == ["123456789012.dkr.ecr.us-east-1.amazonaws.com"]
    settings = stage_settings("dev")
    assert settings.models_table in aws.client("dynamodb").list_tables()["TableNames"]
    queues = aws.client("sqs").list_queues()["QueueUrls"]
    assert any(q.endswith("/modelport-deploy") for q in queues) and any(q.endswith("-dlq") for q in queues)
    assert any("CREATE_COMPLETE" in line for line in lines)
    keys = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=artifact_bucket(settings))["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("api/")
    aws.client("lambda").get_function(FunctionName=settings.worker_function)  # moto ignores PackageType:
    stack = aws.client("cloudformation").describe_stacks(StackName="modelport-dev")["Stacks"][0]
    assert {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]} == {"WorkerImageUri": IMAGE}
    body = aws.client("cloudformation").get_template(StackName="modelport-dev")["TemplateBody"]
    assert body["Resources"]["DeployWorker"]["Properties"]["PackageType"] == "Image"
    # (moto's CloudFormation does not make the worker's event source mapping on the update, nor honour
    # PackageType: tests/unit/test_template.py checks both in the template, cfn-lint their shape.)

    kept = destroy("dev", lines.append, session=aws, sleep=lambda s: None)
    assert kept == [settings.bundle_bucket, settings.data_bucket, artifact_bucket(settings)]
    assert settings.models_table not in aws.client("dynamodb").list_tables()["TableNames"]
    buckets = [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]]
    assert set(kept) <= set(buckets)
    assert destroy("dev", lines.append, session=aws, delete_data=True, sleep=lambda s: None) == []
    assert not set(kept) & {b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]}


def test_a_stack_in_a_failed_state_is_a_clear_error() -> None:
    cfn = boto3.client(
        "cloudformation", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(cfn) as stub:
        stub.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {
                        "StackName": "modelport-dev",
                        "StackStatus": "ROLLBACK_COMPLETE",
                        "CreationTime": "2026-01-01T00:00:00Z",
                    }
                ]
            },
            {"StackName": "modelport-dev"},
        )
        with pytest.raises(ConfigError, match="ROLLBACK_COMPLETE: CloudFormation cannot update it"):
            Stack(cfn, "modelport-dev", print).check_deployable()


def test_a_refused_change_set_says_why_and_an_empty_one_is_no_change() -> None:
    cfn = boto3.client(
        "cloudformation", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    lines: list[str] = []
    stack = Stack(cfn, "modelport-dev", lines.append, sleep=lambda s: None)
    with Stubber(cfn) as stub:
        for reason in ("The submitted information didn't contain changes.", "Template format error: nope"):
            stub.add_response("create_change_set", {"Id": "arn:cs", "StackId": "arn:stack"})
            stub.add_response("describe_change_set", {"Status": "FAILED", "StatusReason": reason})
            if "changes" in reason:
                stub.add_response("delete_change_set", {})
        assert stack.apply({"Resources": {}}, {"WorkerImageUri": ""}, create=False) is False
        with pytest.raises(ConfigError, match="refused the change set: Template format error"):
            stack.apply({"Resources": {}}, {}, create=False)
        stub.assert_no_pending_responses()
    assert lines == ["modelport-dev: no changes"]


def test_no_credentials_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    result = CliRunner().invoke(cli, ["aws", "destroy", "--stage", "dev"])
    assert result.exit_code == 2, result.output
    assert "error: no AWS credentials" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["aws", "deploy", "--stage", "local"])
    assert result.exit_code == 2 and "runs on this machine" in result.output


def test_package_writes_a_lint_clean_template_and_a_slim_api_zip(tmp_path: Path) -> None:
    """The real ``chalice package`` (offline: the wheels come from pip's cache or the index)."""
    from cfnlint.api import lint

    result = CliRunner().invoke(cli, ["aws", "package", "--stage", "dev", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "chalice" / "deployment.zip").stat().st_size <= 50 * 1024 * 1024
    with zipfile.ZipFile(tmp_path / "chalice" / "deployment.zip") as zf:
        top = {name.split("/")[0] for name in zf.namelist()}
    assert not top & {"numpy", "onnx", "sklearn", "skops", "scipy"}, top
    template = json.loads((tmp_path / "template.json").read_text())
    assert [str(m) for m in lint(json.dumps(template), regions=["us-east-1"])] == []
    types = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::DynamoDB::Table", "AWS::ECR::Repository", "AWS::Lambda::EventSourceMapping"} <= types
    assert template["Resources"]["DeployWorker"]["Properties"]["PackageType"] == "Image"
    assert template["Resources"]["APIHandler"]["Type"] == "AWS::Serverless::Function"
