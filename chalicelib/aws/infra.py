"""Creates the control plane's stateful resources, idempotently: the tables, the bundle bucket, the deploy
queue with its dead-letter queue, and the S3 -> SQS notification that starts a deployment on upload.

The same calls run against AWS, moto and LocalStack (``settings.endpoint_url``), so the local stack and the
functional tests exercise exactly what production runs. ``docs/tables.md`` describes the table design.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.settings import Settings

UPLOAD_PREFIX = "uploads/"
BATCH_PREFIX = "inputs/"
"""Objects created under this prefix of the data bucket notify the jobs queue: event-driven batch."""
"""Bundles are uploaded under this prefix; only objects created here notify the deploy queue."""

GSI1 = "gsi1"
WORKER_TIMEOUT_S = 600
"""The deploy worker's function timeout: an image build with a cold wheel cache fits well inside it."""
DEPLOY_LAMBDA_TIMEOUT_S = WORKER_TIMEOUT_S  # the name before the worker became its own function
VISIBILITY_TIMEOUT_S = 6 * WORKER_TIMEOUT_S
"""AWS advises at least 6x the consumer's timeout, so a retried batch never overlaps a running one."""
MAX_RECEIVE_COUNT = 5
JOBS_VISIBILITY_TIMEOUT_S = 6 * 900
"""The jobs queue's: six times the job runner's timeout (a model may run Lambda's 900 s)."""
DLQ_RETENTION_S = 14 * 24 * 3600

TABLES: tuple[tuple[str, str, bool], ...] = (
    ("AccountsTable", "accounts_table", True),
    ("ModelsTable", "models_table", True),
    ("DeploymentsTable", "deployments_table", True),
    ("AssociationsTable", "associations_table", False),
    ("JobsTable", "jobs_table", True),
    ("UsageTable", "usage_table", False),
)
"""Each table: its logical name in the stack template, the Settings field naming it, whether it has GSI1."""
TTL_ATTRIBUTE = {"jobs_table": "expires_at"}
"""The tables whose items expire, and the attribute (epoch seconds) DynamoDB's TTL reads."""
_TABLES = tuple((field, has_gsi) for _, field, has_gsi in TABLES)


def _code(err: Any) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _clients(settings: Settings, session: Any | None) -> tuple[Any, Any, Any]:
    if session is None:
        import boto3

        session = boto3.session.Session(region_name=settings.region)

    def client(name: str) -> Any:
        return session.client(name, region_name=settings.region, endpoint_url=settings.endpoint_url)

    return client("dynamodb"), client("s3"), client("sqs")


def dlq_name(settings: Settings) -> str:
    return f"{settings.deploy_queue}-dlq"


def create_infrastructure(
    settings: Settings, session: Any | None = None, *, sleep: Callable[[float], None] = time.sleep
) -> dict[str, str]:
    """Create whatever is missing and (re)apply every setting; returns the names, ARNs and URLs."""
    dynamodb, s3, sqs = _clients(settings, session)
    tables = [(getattr(settings, field), has_gsi) for field, has_gsi in _TABLES]
    for name, has_gsi in tables:
        _create_table(dynamodb, name, has_gsi)
    for name, _ in tables:
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 90})
    for field, attribute in TTL_ATTRIBUTE.items():
        _enable_ttl(dynamodb, getattr(settings, field), attribute)

    bucket = settings.bundle_bucket
    _create_bucket(s3, bucket, settings.region)

    dlq_url = sqs.create_queue(QueueName=dlq_name(settings))["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)})
    dlq_arn = _queue_arn(sqs, dlq_url)
    queue_url = sqs.create_queue(QueueName=settings.deploy_queue)["QueueUrl"]
    queue_arn = _queue_arn(sqs, queue_url)
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
            ),
            "Policy": json.dumps(_queue_policy(queue_arn, bucket)),
        },
    )
    _notify_queue(s3, bucket, queue_arn, sleep)
    jobs_url = sqs.create_queue(QueueName=settings.jobs_queue)["QueueUrl"]
    jobs_arn = _queue_arn(sqs, jobs_url)
    _create_bucket(s3, settings.data_bucket, settings.region)
    sqs.set_queue_attributes(
        QueueUrl=jobs_url,
        Attributes={
            "VisibilityTimeout": str(JOBS_VISIBILITY_TIMEOUT_S),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
            ),
            "Policy": json.dumps(_queue_policy(jobs_arn, settings.data_bucket)),
        },
    )
    _notify_queue(
        s3, settings.data_bucket, jobs_arn, sleep, prefix=BATCH_PREFIX, name="modelport-batch-input"
    )

    invocations_dlq = sqs.create_queue(
        QueueName=f"{settings.invocations_queue}-dlq",
        Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)},
    )["QueueUrl"]
    invocations_url = sqs.create_queue(
        QueueName=settings.invocations_queue,
        Attributes={
            "VisibilityTimeout": str(JOBS_VISIBILITY_TIMEOUT_S),
            "RedrivePolicy": json.dumps(  # a backstop: the handler dead-letters with the reason itself
                {
                    "deadLetterTargetArn": _queue_arn(sqs, invocations_dlq),
                    "maxReceiveCount": MAX_RECEIVE_COUNT,
                }
            ),
        },
    )["QueueUrl"]

    outputs = {field: name for (field, _), (name, _) in zip(_TABLES, tables, strict=True)}
    outputs.update(
        bundle_bucket=bucket,
        bundle_bucket_arn=f"arn:aws:s3:::{bucket}",
        deploy_queue_url=str(queue_url),
        deploy_queue_arn=queue_arn,
        deploy_dlq_url=str(dlq_url),
        deploy_dlq_arn=dlq_arn,
        jobs_queue_url=str(jobs_url),
        jobs_queue_arn=jobs_arn,
        invocations_queue_url=str(invocations_url),
        invocations_queue_arn=_queue_arn(sqs, invocations_url),
        invocations_dlq_url=str(invocations_dlq),
        data_bucket=settings.data_bucket,
    )
    return outputs


def destroy_infrastructure(settings: Settings, session: Any | None = None) -> None:
    """Delete everything ``create_infrastructure`` made, objects included; what is already gone is skipped."""
    dynamodb, s3, sqs = _clients(settings, session)
    for field, _ in _TABLES:
        try:
            dynamodb.delete_table(TableName=getattr(settings, field))
        except ClientError as err:
            if _code(err) != "ResourceNotFoundException":
                raise
    for bucket in (settings.bundle_bucket, settings.data_bucket):
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            s3.delete_bucket(Bucket=bucket)
        except ClientError as err:
            if _code(err) != "NoSuchBucket":
                raise
    queues = (settings.invocations_queue, f"{settings.invocations_queue}-dlq")
    for name in (settings.deploy_queue, settings.jobs_queue, dlq_name(settings), *queues):
        try:
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except ClientError as err:
            if _code(err) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise


def table_definition(name: str, has_gsi: bool) -> dict[str, Any]:
    """CreateTable's parameters (and the template's table properties): generic string keys ``pk``/``sk``
    (and ``gsi1pk``/``gsi1sk``, GSI1 projected ALL); item types live in the key values."""
    attributes = ["pk", "sk", "gsi1pk", "gsi1sk"] if has_gsi else ["pk", "sk"]
    kwargs: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    }
    if has_gsi:
        kwargs["GlobalSecondaryIndexes"] = [
            {
                "IndexName": GSI1,
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ]
    return kwargs


def _enable_ttl(dynamodb: Any, name: str, attribute: str) -> None:
    current = dynamodb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    if (
        current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
        and current.get("AttributeName") == attribute
    ):
        return
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
    )


def _create_table(dynamodb: Any, name: str, has_gsi: bool) -> None:
    try:
        dynamodb.create_table(**table_definition(name, has_gsi))
    except ClientError as err:
        if _code(err) != "ResourceInUseException":  # exists already (or is being created)
            raise


def _create_bucket(s3: Any, bucket: str, region: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as err:
        if _code(err) != "BucketAlreadyOwnedByYou":
            raise
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _queue_policy(queue_arn: str, bucket: str) -> dict[str, Any]:
    """Only our bucket, in our account (against confused deputies), may send to the queue."""
    account = queue_arn.split(":")[4]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BundleBucketNotifies",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                    "StringEquals": {"aws:SourceAccount": account},
                },
            }
        ],
    }


def _notify_queue(
    s3: Any,
    bucket: str,
    queue_arn: str,
    sleep: Callable[[float], None],
    *,
    prefix: str = UPLOAD_PREFIX,
    name: str = "modelport-bundle-uploaded",
) -> None:
    """Replace the bucket's notifications with ours (idempotent). S3 checks it may send to the queue; a queue
    policy set a moment ago may not have propagated yet, hence the retries. S3 also sends an
    ``s3:TestEvent`` message to the queue each time: the queue's consumer must ignore it.
    """
    config = {
        "QueueConfigurations": [
            {
                "Id": name,
                "QueueArn": queue_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
            }
        ]
    }
    for attempt in range(10):
        try:
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
            return
        except ClientError as err:
            if _code(err) != "InvalidArgument" or attempt == 9:
                raise
            sleep(3)
