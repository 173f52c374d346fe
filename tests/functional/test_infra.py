"""``create_infrastructure`` against a moto server: idempotent, and an upload reaches the deploy queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from chalicelib.aws.infra import (
    MAX_RECEIVE_COUNT,
    UPLOAD_PREFIX,
    VISIBILITY_TIMEOUT_S,
    create_infrastructure,
    destroy_infrastructure,
)
from chalicelib.settings import Settings
from tests.conftest import Infra, unique_settings

ROOT = Path(__file__).resolve().parents[2]


def s3_events(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message now on the queue, without S3's ``s3:TestEvent`` (sent when notifications are set)."""
    bodies: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not got.get("Messages"):
            return [b for b in bodies if b.get("Event") != "s3:TestEvent"]
        for message in got["Messages"]:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.functional
def test_creating_twice_changes_nothing(infra: Infra) -> None:
    again = create_infrastructure(infra.settings, infra.session)
    assert again == infra.outputs
    dynamodb = infra.client("dynamodb")
    for name, indexes in [
        (infra.settings.accounts_table, ["gsi1"]),
        (infra.settings.models_table, ["gsi1"]),
        (infra.settings.deployments_table, ["gsi1"]),
        (infra.settings.associations_table, []),
        (infra.settings.jobs_table, ["gsi1"]),
        (infra.settings.usage_table, []),
    ]:
        table = dynamodb.describe_table(TableName=name)["Table"]
        assert table["TableStatus"] == "ACTIVE"
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert [i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])] == indexes
    assert len(dynamodb.list_tables()["TableNames"]) >= 6
    ttl = dynamodb.describe_time_to_live(TableName=infra.settings.jobs_table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


@pytest.mark.functional
def test_the_deploy_queue_has_a_dead_letter_queue_and_a_policy_for_the_bucket(infra: Infra) -> None:
    sqs = infra.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=infra.outputs["deploy_queue_url"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == infra.outputs["deploy_dlq_arn"]
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT == 5
    assert int(attributes["VisibilityTimeout"]) == VISIBILITY_TIMEOUT_S >= 900
    (statement,) = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == infra.outputs["bundle_bucket_arn"]


@pytest.mark.functional
def test_an_upload_puts_an_s3_event_on_the_deploy_queue(infra: Infra) -> None:
    s3, sqs = infra.client("s3"), infra.client("sqs")
    bucket, queue_url = infra.outputs["bundle_bucket"], infra.outputs["deploy_queue_url"]
    s3_events(sqs, queue_url)  # drop the test event
    s3.put_object(Bucket=bucket, Key="uploads/iris/v1.tar.gz", Body=b"bundle")
    s3.put_object(Bucket=bucket, Key="manifests/iris/v1.json", Body=b"{}")  # outside uploads/: no event
    (event,) = s3_events(sqs, queue_url)
    (record,) = event["Records"]
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == bucket
    # S3 URL-encodes the key ("a b" -> "a+b"; moto also encodes "/"): consumers must unquote_plus it.
    assert unquote_plus(record["s3"]["object"]["key"]) == "uploads/iris/v1.tar.gz"
    assert record["s3"]["object"]["size"] == 6


@pytest.mark.functional
def test_destroying_removes_everything_and_twice_is_fine(moto_server: str, aws_session: Any) -> None:
    settings = unique_settings(moto_server)
    outputs = create_infrastructure(settings, aws_session)
    s3 = aws_session.client("s3", endpoint_url=moto_server)
    s3.put_object(Bucket=outputs["bundle_bucket"], Key="uploads/x.zip", Body=b"x")
    destroy_infrastructure(settings, aws_session)
    destroy_infrastructure(settings, aws_session)
    dynamodb = aws_session.client("dynamodb", endpoint_url=moto_server)
    assert settings.models_table not in dynamodb.list_tables()["TableNames"]
    assert outputs["bundle_bucket"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_iam_policy_covers_exactly_the_default_resources(stage: str) -> None:
    """The policy files hold literal names (Chalice does not template them): they must match Settings."""
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    defaults = Settings()
    tables = [defaults.accounts_table, defaults.models_table, defaults.deployments_table]
    for table in [*tables, defaults.associations_table, defaults.usage_table]:
        assert f"arn:aws:dynamodb:*:*:table/{table}" in resources
    for table in tables:
        assert f"arn:aws:dynamodb:*:*:table/{table}/index/*" in resources
    assert f"arn:aws:s3:::{defaults.bundle_bucket}/{UPLOAD_PREFIX}*" in resources
    assert f"arn:aws:sqs:*:*:{defaults.deploy_queue}" in resources
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert not any(a.endswith("*") or a in ("dynamodb:Scan", "s3:DeleteObject") for a in actions)


@pytest.mark.functional
def test_the_cli_creates_the_infrastructure_on_any_endpoint(moto_server: str) -> None:
    import os
    import subprocess
    import sys

    prefix = unique_settings(moto_server).accounts_table.removesuffix("-accounts")
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "MODELPORT_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **{
            f"MODELPORT_{t.upper()}_TABLE": f"{prefix}-{t}"
            for t in ("accounts", "models", "deployments", "associations")
        },
        "MODELPORT_BUNDLE_BUCKET": f"{prefix}-bundles",
        "MODELPORT_DEPLOY_QUEUE": f"{prefix}-deploy",
    }
    for _ in range(2):  # idempotent
        result = subprocess.run(
            [sys.executable, "-m", "chalicelib.cli", "infra", "create"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
        assert f"accounts_table: {prefix}-accounts" in result.stdout
        assert f"on {moto_server}" in result.stderr
    destroy_infrastructure(
        Settings(
            endpoint_url=moto_server,
            accounts_table=f"{prefix}-accounts",
            models_table=f"{prefix}-models",
            deployments_table=f"{prefix}-deployments",
            associations_table=f"{prefix}-associations",
            bundle_bucket=f"{prefix}-bundles",
            data_bucket=f"{prefix}-data",
            deploy_queue=f"{prefix}-deploy",
        )
    )


def _adapter_calls(modules: tuple[str, ...], receivers: dict[str, str]) -> set[str]:
    """The IAM actions of the boto3 calls in the adapters' source (self.<client>.<op> or sfn.<op>)."""
    import ast

    iam_names = {"invoke": "InvokeFunction", "list_versions_by_function": "ListVersionsByFunction"}
    called: set[str] = set()
    for module in modules:
        tree = ast.parse((ROOT / "chalicelib" / "aws" / module).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value  # self.client.<op>, self.sfn.<op>, or a local sfn.<op>
            if (
                isinstance(owner, ast.Attribute)
                and isinstance(owner.value, ast.Name)
                and owner.value.id == "self"
            ):
                name = owner.attr
            else:
                name = owner.id if isinstance(owner, ast.Name) and owner.id == "sfn" else ""
            if name in receivers and not node.attr.startswith(("meta", "exceptions", "_")):
                op = iam_names.get(node.attr) or "".join(p.title() for p in node.attr.split("_"))
                called.add(f"{receivers[name]}:{op}")
    return called | {"lambda:InvokeFunction", "states:StartSyncExecution"}  # the invoker's signed requests


LAMBDA_AND_STATES = {"client": "lambda", "lambda_client": "lambda", "sfn": "states", "sfn_client": "states"}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_iam_policy_allows_every_lambda_and_step_functions_call_of_the_adapters(stage: str) -> None:
    """Read the calls from the adapters' source, so a new call without its permission fails here."""
    import re

    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    allowed = {a for s in policy["Statement"] for a in s["Action"]}
    called = _adapter_calls(("functions.py", "invoke.py"), LAMBDA_AND_STATES)
    assert {"lambda:CreateFunction", "lambda:PublishVersion", "states:CreateStateMachine"} <= called
    assert called <= allowed, sorted(called - allowed)
    assert all(re.fullmatch(r"[a-z0-9]+:[A-Za-z]+", a) for a in allowed)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_api_may_read_the_logs_it_shows_owners_and_no_other_groups(stage: str) -> None:
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    called = _adapter_calls(("logs.py",), {"client": "logs"}) - {
        "lambda:InvokeFunction",
        "states:StartSyncExecution",
    }
    assert called == {"logs:FilterLogEvents"}
    (reading,) = [s for s in policy["Statement"] if "logs:FilterLogEvents" in s["Action"]]
    assert reading["Action"] == ["logs:FilterLogEvents"]
    assert reading["Resource"] == ["arn:aws:logs:*:*:log-group:/aws/lambda/modelport-*"]


def test_the_worker_role_allows_every_call_of_the_worker_and_the_builder() -> None:
    """The deploy worker (the template's WorkerRole) makes the model functions, the probe's calls, the
    state machines and the ECR pushes: each call in those adapters' source, and the registry client's."""
    from chalicelib.aws.template import REGISTRY_PUSH_ACTIONS, stack_template

    role = stack_template(Settings(stage="dev", image_builder="oci", registry="ecr", functions="lambda"))
    statements = [
        s
        for p in role["Resources"]["WorkerRole"]["Properties"]["Policies"]
        for s in p["PolicyDocument"]["Statement"]
    ]
    allowed = {a for s in statements for a in s["Action"]}
    called = _adapter_calls(("functions.py", "invoke.py", "sandbox.py"), LAMBDA_AND_STATES)
    called |= _adapter_calls(("ecr.py",), {"client": "ecr"}) - {
        "lambda:InvokeFunction",
        "states:StartSyncExecution",
    }
    called |= set(REGISTRY_PUSH_ACTIONS)
    called |= _adapter_calls(("sqs.py",), {"client": "sqs"}) - {
        "lambda:InvokeFunction",
        "states:StartSyncExecution",
    }
    assert {"ecr:CreateRepository", "ecr:GetAuthorizationToken", "lambda:CreateFunction"} <= called
    assert {"sqs:ChangeMessageVisibility", "sqs:GetQueueUrl"} <= called
    assert called <= allowed, sorted(called - allowed)
    assert not any(a.endswith("*") for a in allowed)


S3_ACTIONS = {
    "put_object": "s3:PutObject",
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "list_objects_v2": "s3:ListBucket",  # on the bucket itself, not its objects
}
"""The IAM action of each call the artifact store makes (presigned URLs are signed locally: no call)."""


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_api_policy_allows_every_s3_call_of_the_artifact_store_on_the_data_bucket(stage: str) -> None:
    """The API lists and reads batch outputs (``GET /v1/models/{name}/batches``): each call in the S3
    adapter's source, allowed on the data bucket's ``outputs/`` (its listing on the bucket)."""
    import ast

    tree = ast.parse((ROOT / "chalicelib" / "aws" / "s3.py").read_text())
    called = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "client"
        and not node.attr.startswith("generate_presigned")
    }
    assert "list_objects_v2" in called and called <= S3_ACTIONS.keys(), sorted(called - S3_ACTIONS.keys())
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    bucket = f"arn:aws:s3:::{Settings().data_bucket}"
    for op in sorted(called):
        action = S3_ACTIONS[op]
        resource = bucket if action == "s3:ListBucket" else f"{bucket}/outputs/*"
        assert any(action in s["Action"] and resource in s["Resource"] for s in policy["Statement"]), op
