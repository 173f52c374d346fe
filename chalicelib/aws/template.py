"""The stack as one CloudFormation template, built from data: what ``chalicelib/aws/infra.py`` creates by API
(the same tables, keys, GSI, queues, redrive and notification), plus what Chalice cannot declare: the deploy
worker as a container-image function with its SQS mapping, the ECR repositories, the roles of model
functions, the probe and state machines, the admin key secret and log retention.

``merge`` adds it to Chalice's ``chalice package`` output (``sam.json``) and points the API functions'
environment at these resources (``Ref``/``GetAtt``). Names come from ``Settings`` and are checked against
each service's rules before they go into the template; nothing is built by pasting text together.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from chalicelib.aws.ecr import REGISTRY_PUSH_ACTIONS, lifecycle_policy
from chalicelib.aws.functions import STATES_LOG_GROUP
from chalicelib.aws.infra import (
    BATCH_PREFIX,
    DLQ_RETENTION_S,
    JOBS_VISIBILITY_TIMEOUT_S,
    MAX_RECEIVE_COUNT,
    TABLES,
    TTL_ATTRIBUTE,
    UPLOAD_PREFIX,
    VISIBILITY_TIMEOUT_S,
    WORKER_TIMEOUT_S,
    dlq_name,
    table_definition,
)
from chalicelib.core.errors import ConfigError
from chalicelib.core.records import JOB_TTL_S
from chalicelib.settings import REVOCATION_WINDOW_S, Settings, settings_env

MODEL_PREFIX = "modelport-"
WORKER_NEVER_READS = frozenset({"AccountsTable", "JobsTable", "UsageTable"})  # keys, invocations: the API's
"""Model functions, state machines and model repositories are named ``modelport-*``."""
WORKER_REPOSITORY = "modelport-deploy-worker"
WORKER_MEMORY_MB = 3008
"""The most a new account may give a function; image builds unpack wheels and hash layers in memory."""
WORKER_EPHEMERAL_MB = 10240
"""The scratch space holds the wheelhouse, the unpacked environment and the layer tarballs."""
LOG_RETENTION_DAYS = 30
"""Each repository keeps this many images (newest first); older ones expire."""
ROLE_NAMES = {
    "FunctionRole": "modelport-functions",
    "StatesRole": "modelport-states",
    "ProbeRole": "modelport-probe",
}
"""Fixed names: the API's policy files (``.chalice/policy-deploy-*.json``) may pass exactly these."""

_NAME_RULES = {
    "table": re.compile(r"[A-Za-z0-9_.-]{3,255}"),
    "bucket": re.compile(r"[a-z0-9][a-z0-9.-]{1,53}[a-z0-9]"),  # room for the -artifacts suffix
    "queue": re.compile(r"[A-Za-z0-9_-]{1,76}"),  # room for the -dlq suffix
    "function": re.compile(r"[A-Za-z0-9_-]{1,64}"),
    "secret": re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}"),
}
DEFAULT_ADMIN_SECRET = "modelport/admin-key"  # noqa: S105 (a name, not a key)


def _checked(kind: str, name: str) -> str:
    if not _NAME_RULES[kind].fullmatch(name):
        raise ConfigError(f"{name[:80]!r} is not a valid {kind} name for CloudFormation", path=kind)
    return name


def _arn(service: str, resource: str, *, region: bool = True, account: bool = True) -> dict[str, Any]:
    """``arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`` with the pseudo parameters (resource: constant)."""
    return {
        "Fn::Join": [
            ":",
            [
                "arn",
                {"Ref": "AWS::Partition"},
                service,
                {"Ref": "AWS::Region"} if region else "",
                {"Ref": "AWS::AccountId"} if account else "",
                resource,
            ],
        ]
    }


def _join(*parts: Any) -> dict[str, Any]:
    return {"Fn::Join": ["", list(parts)]}


def _assume(service: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def _statement(sid: str, actions: list[str], resources: list[Any], **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources, **extra}


TRACE_WRITE_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
"""What a function (or a state machine) with active tracing sends X-Ray (AWSXRayDaemonWriteAccess's writes;
X-Ray has no resource-level permissions: ``*``)."""
SAMPLING_ACTIONS = ("xray:GetSamplingRules", "xray:GetSamplingTargets")
LOG_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
)
"""What Step Functions needs to set up a machine's execution log (a vended log delivery): on the machines'
role and on whoever creates or updates them (the deploy worker); these actions take no resource but ``*``."""


def _tracing_statement(*, sampling: bool = False) -> dict[str, Any]:
    return _statement("Tracing", [*TRACE_WRITE_ACTIONS, *(SAMPLING_ACTIONS if sampling else ())], ["*"])


def _log_delivery_statement() -> dict[str, Any]:
    return _statement("ExecutionLogDelivery", list(LOG_DELIVERY_ACTIONS), ["*"])


def states_log_group(settings: Settings) -> str:
    """The stage's shared execution log of its state machines (``StatesLogGroup``)."""
    return f"{STATES_LOG_GROUP}-{stack_name(settings.stage).removeprefix('modelport-')}"


def _logs_statement(group: Any) -> dict[str, Any]:
    return _statement(
        "Logs",
        ["logs:CreateLogStream", "logs:PutLogEvents"],
        [_join(group, ":*")],
    )


def _table(name: str, has_gsi: bool, ttl: str | None = None) -> dict[str, Any]:
    """``infra.table_definition``, with point-in-time recovery, encryption at rest and ``ttl``."""
    props = {
        **table_definition(name, has_gsi),
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
    }
    if ttl:
        props["TimeToLiveSpecification"] = {"Enabled": True, "AttributeName": ttl}
    return {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Delete", "Properties": props}


def _bucket(name: str, **extra: Any) -> dict[str, Any]:
    """Retained when the stack goes (``modelport aws destroy --delete-data`` empties and deletes it)."""
    return {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketName": name,
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            **extra,
        },
    }


def artifact_bucket(settings: Settings) -> str:
    """Where ``modelport aws deploy`` uploads the API package (CloudFormation reads code from S3)."""
    return f"{_checked('bucket', settings.bundle_bucket)}-artifacts"


def stack_name(stage: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,40}", stage):
        raise ConfigError(f"{stage[:40]!r} is not a stage name (letters, digits, -)", path="stage")
    return f"modelport-{stage}"


def worker_env(settings: Settings) -> dict[str, Any]:
    """The stage's settings as the worker reads them, its adapters the production ones, names by Ref."""
    env: dict[str, Any] = {
        k: v for k, v in settings_env(settings).items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")
    }
    env.pop("MODELPORT_ENDPOINT_URL", None)
    for name in ("MODELPORT_ADMIN_KEY", "MODELPORT_ADMIN_KEY_SECRET", "MODELPORT_ADMIN_KEY_PARAMETER"):
        env.pop(name, None)  # only the authorizer learns where the admin key lives
    env.update(
        MODELPORT_IMAGE_BUILDER="oci",
        MODELPORT_REGISTRY="ecr",
        MODELPORT_FUNCTIONS="lambda",
        MODELPORT_SANDBOX="lambda",
    )
    env.update(resource_env())
    return env


def resource_env() -> dict[str, Any]:
    """The variables that name stack resources, as references, so a function never names a stale one."""
    env: dict[str, Any] = {f"MODELPORT_{field.upper()}": {"Ref": logical} for logical, field, _ in TABLES}
    env.update(
        MODELPORT_BUNDLE_BUCKET={"Ref": "BundleBucket"},
        MODELPORT_DATA_BUCKET={"Ref": "DataBucket"},
        MODELPORT_DEPLOY_QUEUE={"Fn::GetAtt": ["DeployQueue", "QueueName"]},
        MODELPORT_JOBS_QUEUE={"Fn::GetAtt": ["JobsQueue", "QueueName"]},
        MODELPORT_FUNCTION_ROLE={"Fn::GetAtt": ["FunctionRole", "Arn"]},
        MODELPORT_STATES_ROLE={"Fn::GetAtt": ["StatesRole", "Arn"]},
        MODELPORT_PROBE_ROLE={"Fn::GetAtt": ["ProbeRole", "Arn"]},
        MODELPORT_STATES_LOG_GROUP={"Fn::GetAtt": ["StatesLogGroup", "Arn"]},  # arn:...:log-group:NAME:*
    )
    return env


MODEL_FUNCTION_ACTIONS = (
    "lambda:CreateFunction",
    "lambda:GetFunction",
    "lambda:GetFunctionConfiguration",
    "lambda:UpdateFunctionCode",
    "lambda:UpdateFunctionConfiguration",
    "lambda:PublishVersion",
    "lambda:DeleteFunction",
    "lambda:CreateAlias",
    "lambda:GetAlias",
    "lambda:UpdateAlias",
    "lambda:TagResource",
    "lambda:InvokeFunction",
    "lambda:ListVersionsByFunction",
    "lambda:PutProvisionedConcurrencyConfig",
    "lambda:GetProvisionedConcurrencyConfig",
    "lambda:DeleteProvisionedConcurrencyConfig",
)
"""What the deploy worker does to ``modelport-*`` functions."""


def _worker_policy(settings: Settings) -> dict[str, Any]:
    """Every call the deploy worker and its image builder make, on exactly the stack's resources."""
    bucket_arn = {"Fn::GetAtt": ["BundleBucket", "Arn"]}
    mine = [(logical, has_gsi) for logical, _, has_gsi in TABLES if logical not in WORKER_NEVER_READS]
    tables = [{"Fn::GetAtt": [logical, "Arn"]} for logical, _ in mine]
    indexes = [_join({"Fn::GetAtt": [logical, "Arn"]}, "/index/*") for logical, has_gsi in mine if has_gsi]
    models = f"function:{MODEL_PREFIX}*"
    repositories = _arn("ecr", f"repository/{MODEL_PREFIX}*")
    statements = [
        _statement(
            "DeploymentRecords",
            [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:ConditionCheckItem",
                "dynamodb:Query",
            ],
            [*tables, *indexes],
        ),
        _statement("ReadBundlesAndWheels", ["s3:GetObject"], [_join(bucket_arn, "/*")]),
        _statement(
            "StageProbesAndCacheWheels",
            ["s3:PutObject"],
            [_join(bucket_arn, "/probes/*"), _join(bucket_arn, "/", settings.wheel_cache_prefix, "*")],
        ),
        _statement("MissingObjectsAre404Not403", ["s3:ListBucket"], [bucket_arn]),
        _statement(
            "ConsumeDeployQueue",
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueUrl",  # the worker's RetryQueue finds the queue by the record's ARN
            ],
            [{"Fn::GetAtt": ["DeployQueue", "Arn"]}],
        ),
        _statement("ManageModelFunctions", list(MODEL_FUNCTION_ACTIONS), [_arn("lambda", models)]),
        _statement("RegistryLogin", ["ecr:GetAuthorizationToken"], ["*"]),  # account-wide by design
        _statement(
            "PushModelImages",
            sorted(set(REGISTRY_PUSH_ACTIONS) - {"ecr:GetAuthorizationToken"}),
            [repositories],
        ),
        _statement(
            "ChainedPipelines",
            [
                "states:CreateStateMachine",
                "states:DescribeStateMachine",
                "states:UpdateStateMachine",
                "states:DeleteStateMachine",
                "states:TagResource",
                "states:StartSyncExecution",
            ],
            [_arn("states", f"stateMachine:{MODEL_PREFIX}*")],
        ),
        _statement(
            "PassExecutionRoles",
            ["iam:PassRole"],
            [{"Fn::GetAtt": [logical, "Arn"]} for logical in ROLE_NAMES],
            Condition={
                "StringEquals": {"iam:PassedToService": ["lambda.amazonaws.com", "states.amazonaws.com"]}
            },
        ),
        _logs_statement({"Fn::GetAtt": ["WorkerLogGroup", "Arn"]}),
        _log_delivery_statement(),  # creating or updating a machine with its execution log
        _tracing_statement(),
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def _roles(settings: Settings) -> dict[str, Any]:
    model_logs = _arn("logs", f"log-group:/aws/lambda/{MODEL_PREFIX}*")
    return {
        "WorkerRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": _assume("lambda.amazonaws.com"),
                "Policies": [{"PolicyName": "deploy-worker", "PolicyDocument": _worker_policy(settings)}],
            },
        },
        "ProbeRole": {  # opens untrusted pickles: grants nothing, not even logs
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": ROLE_NAMES["ProbeRole"],
                "AssumeRolePolicyDocument": _assume("lambda.amazonaws.com"),
            },
        },
        "FunctionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": ROLE_NAMES["FunctionRole"],
                "AssumeRolePolicyDocument": _assume("lambda.amazonaws.com"),
                "Policies": [
                    {
                        "PolicyName": "logs-only",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                _statement(
                                    "Logs",
                                    ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                                    [model_logs, _join(model_logs, ":log-stream:*")],
                                ),
                                _tracing_statement(),
                            ],
                        },
                    }
                ],
            },
        },
        "StatesRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": ROLE_NAMES["StatesRole"],
                "AssumeRolePolicyDocument": _assume("states.amazonaws.com"),
                "Policies": [
                    {
                        "PolicyName": "invoke-model-functions",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                _statement(
                                    "InvokeModelFunctions",
                                    ["lambda:InvokeFunction"],
                                    [
                                        _arn("lambda", f"function:{MODEL_PREFIX}*"),
                                        _arn("lambda", f"function:{MODEL_PREFIX}*:*"),
                                    ],
                                ),
                                _log_delivery_statement(),
                                _tracing_statement(sampling=True),
                            ],
                        },
                    }
                ],
            },
        },
    }


def _queues(settings: Settings, bucket: str) -> dict[str, Any]:
    queue = _checked("queue", settings.deploy_queue)
    bucket_arn = _arn("s3", bucket, region=False, account=False)  # not GetAtt: that would be a cycle
    return {
        "DeployDeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"QueueName": dlq_name(settings), "MessageRetentionPeriod": DLQ_RETENTION_S},
        },
        "DeployQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": queue,
                "VisibilityTimeout": VISIBILITY_TIMEOUT_S,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["DeployDeadLetterQueue", "Arn"]},
                    "maxReceiveCount": MAX_RECEIVE_COUNT,
                },
            },
        },
        "JobsQueue": {  # the job runner (Chalice's on_job) consumes it
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": _checked("queue", settings.jobs_queue),
                "VisibilityTimeout": JOBS_VISIBILITY_TIMEOUT_S,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["DeployDeadLetterQueue", "Arn"]},
                    "maxReceiveCount": MAX_RECEIVE_COUNT,
                },
            },
        },
        "InvocationsDeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": _checked("queue", f"{settings.invocations_queue}-dlq"),
                "MessageRetentionPeriod": DLQ_RETENTION_S,
            },
        },
        "InvocationsQueue": {  # message-driven invocations (Chalice's on_invocation consumes it)
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": _checked("queue", settings.invocations_queue),
                "VisibilityTimeout": JOBS_VISIBILITY_TIMEOUT_S,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["InvocationsDeadLetterQueue", "Arn"]},
                    "maxReceiveCount": MAX_RECEIVE_COUNT,
                },
            },
        },
        "DeployQueuePolicy": {  # as infra._queue_policy: only our bucket, in our account
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [{"Ref": "DeployQueue"}],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "BundleBucketNotifies",
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": {"Fn::GetAtt": ["DeployQueue", "Arn"]},
                            "Condition": {
                                "ArnLike": {"aws:SourceArn": bucket_arn},
                                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                            },
                        }
                    ],
                },
            },
        },
    }


def _worker(settings: Settings) -> dict[str, Any]:
    name = _checked("function", settings.worker_function)
    return {
        "WorkerLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "Properties": {"LogGroupName": f"/aws/lambda/{name}", "RetentionInDays": LOG_RETENTION_DAYS},
        },
        "StatesLogGroup": {  # every state machine's execution log (aws/functions.py: failed executions)
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "Properties": {"LogGroupName": states_log_group(settings), "RetentionInDays": LOG_RETENTION_DAYS},
        },
        "WorkerRepository": {
            "Type": "AWS::ECR::Repository",
            "Properties": {
                "RepositoryName": WORKER_REPOSITORY,
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "LifecyclePolicy": {"LifecyclePolicyText": lifecycle_policy()},
                "EmptyOnDelete": True,
            },
        },
        "ModelRepositoryTemplate": {  # the worker creates modelport-* repositories on demand
            "Type": "AWS::ECR::RepositoryCreationTemplate",
            "Properties": {
                "Prefix": MODEL_PREFIX.rstrip("-"),
                "AppliedFor": ["CREATE_ON_PUSH"],  # a push to a missing repository creates it so
                "Description": "Modelport model images: scanned, the newest few kept",
                "ImageTagMutability": "MUTABLE",
                "LifecyclePolicy": lifecycle_policy(),
            },
        },
        "DeployWorker": {
            "Type": "AWS::Lambda::Function",
            "Condition": "HasWorkerImage",
            "DependsOn": ["WorkerLogGroup"],
            "Properties": {
                "FunctionName": name,
                "PackageType": "Image",
                "Code": {"ImageUri": {"Ref": "WorkerImageUri"}},
                "Role": {"Fn::GetAtt": ["WorkerRole", "Arn"]},
                "MemorySize": WORKER_MEMORY_MB,
                "Timeout": WORKER_TIMEOUT_S,
                "EphemeralStorage": {"Size": WORKER_EPHEMERAL_MB},
                "Architectures": ["x86_64"],
                "Environment": {"Variables": worker_env(settings)},
                "TracingConfig": {"Mode": "Active"},
            },
        },
        "DeployWorkerQueueMapping": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Condition": "HasWorkerImage",
            "Properties": {
                "EventSourceArn": {"Fn::GetAtt": ["DeployQueue", "Arn"]},
                "FunctionName": {"Ref": "DeployWorker"},
                "BatchSize": 1,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        },
    }


DATA_EXPIRY_DAYS = {"spill/": 1, "uploads/": 2, "jobs/": JOB_TTL_S // 86400}
"""Payloads by reference live a request; uploads a day or two; a job's objects as long as its record."""


def _data_lifecycle() -> list[dict[str, Any]]:
    return [
        {
            "Id": "expire-" + prefix.rstrip("/"),
            "Status": "Enabled",
            "Prefix": prefix,
            "ExpirationInDays": days,
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        for prefix, days in DATA_EXPIRY_DAYS.items()
    ]


def _data_resources(settings: Settings) -> dict[str, Any]:
    """The data bucket (batch ``inputs/`` notify the jobs queue) and the jobs queue's policy for it."""
    resources: dict[str, Any] = {}
    resources["DataBucket"] = _bucket(
        _checked("bucket", settings.data_bucket),
        LifecycleConfiguration={"Rules": _data_lifecycle()},
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Event": "s3:ObjectCreated:*",
                    "Queue": {"Fn::GetAtt": ["JobsQueue", "Arn"]},
                    "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": BATCH_PREFIX}]}},
                }
            ]
        },
    )
    resources["DataBucket"]["DependsOn"] = ["JobsQueuePolicy"]
    resources["JobsQueuePolicy"] = {  # only the data bucket, in our account, notifies the jobs queue
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [{"Ref": "JobsQueue"}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DataBucketNotifies",
                        "Effect": "Allow",
                        "Principal": {"Service": "s3.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": {"Fn::GetAtt": ["JobsQueue", "Arn"]},
                        "Condition": {
                            "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{settings.data_bucket}"},
                            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                        },
                    }
                ],
            },
        },
    }
    return resources


def stack_template(settings: Settings) -> dict[str, Any]:
    """Our resources alone: what ``modelport aws deploy`` creates first, before the worker image exists."""
    bucket = _checked("bucket", settings.bundle_bucket)
    resources: dict[str, Any] = {
        logical: _table(_checked("table", getattr(settings, field)), has_gsi, TTL_ATTRIBUTE.get(field))
        for logical, field, has_gsi in TABLES
    }
    resources["BundleBucket"] = _bucket(
        bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Event": "s3:ObjectCreated:*",
                    "Queue": {"Fn::GetAtt": ["DeployQueue", "Arn"]},
                    "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": UPLOAD_PREFIX}]}},
                }
            ]
        },
    )
    resources["BundleBucket"]["DependsOn"] = ["DeployQueuePolicy"]  # S3 checks it may send first
    resources["ArtifactBucket"] = _bucket(artifact_bucket(settings))
    resources.update(_data_resources(settings))
    resources.update(_queues(settings, bucket))
    resources.update(_roles(settings))
    resources.update(_worker(settings))
    resources["AdminKeySecret"] = {
        "Type": "AWS::SecretsManager::Secret",
        "Properties": {
            "Name": _checked("secret", settings.admin_key_secret or DEFAULT_ADMIN_SECRET),
            "Description": "The Modelport bootstrap admin key (read only by the authorizer)",
            "GenerateSecretString": {"PasswordLength": 48, "ExcludePunctuation": True},
        },
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"Modelport stage {settings.stage}",
        "Parameters": {
            "WorkerImageUri": {
                "Type": "String",
                "Default": "",
                "Description": "The deploy worker's image (REGISTRY/REPO@sha256:...); empty: no worker yet",
            }
        },
        "Conditions": {"HasWorkerImage": {"Fn::Not": [{"Fn::Equals": [{"Ref": "WorkerImageUri"}, ""]}]}},
        "Resources": resources,
        "Outputs": {
            "AdminKeySecret": {
                "Value": {"Ref": "AdminKeySecret"},
                "Description": "Where the admin key lives",
            },
            "BundleBucket": {"Value": {"Ref": "BundleBucket"}},
            "DataBucket": {
                "Description": "Put inputs/<model>/<name>.csv|.jsonl|<image>; results under outputs/<model>/",
                "Value": {"Ref": "DataBucket"},
            },
            "ArtifactBucket": {"Value": {"Ref": "ArtifactBucket"}},
            "InvocationsQueue": {
                "Description": "Send {model, input | input_url, reply_to?} with an Authorization attribute",
                "Value": {"Ref": "InvocationsQueue"},
            },
            "WorkerRepositoryUri": {"Value": {"Fn::GetAtt": ["WorkerRepository", "RepositoryUri"]}},
        },
    }


def merge(sam: Mapping[str, Any], settings: Settings, *, code_uri: Any | None = None) -> dict[str, Any]:
    """Chalice's ``sam.json`` plus our resources; the API functions' names point at ours.

    Chalice's SQS mappings reference queues by name, so their functions wait for our queues; the
    authorizer's cache TTL is set to ``REVOCATION_WINDOW_S`` whatever the app declared. ``code_uri``
    replaces the local ``./deployment.zip`` (CloudFormation reads code from S3).
    """
    ours = stack_template(settings)
    merged = copy.deepcopy(dict(sam))
    resources: dict[str, Any] = merged.setdefault("Resources", {})
    clash = sorted(set(resources) & set(ours["Resources"]))
    if clash:
        raise ConfigError(f"Chalice's template already has resources named {clash}")
    for key in ("Parameters", "Conditions"):
        merged.setdefault(key, {}).update(ours[key])
    merged.setdefault("Outputs", {}).update(ours["Outputs"])
    merged["Description"] = ours["Description"]
    env = resource_env()
    for logical, resource in list(resources.items()):
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.setdefault("Properties", {})
        props["Tracing"] = "Active"  # as Chalice's "xray": true writes it (.chalice/policy-*.json: xray)
        variables = props.setdefault("Environment", {}).setdefault("Variables", {})
        variables.update(env)
        if "MODELPORT_ADMIN_KEY_SECRET" in variables:
            variables["MODELPORT_ADMIN_KEY_SECRET"] = {"Ref": "AdminKeySecret"}
        if code_uri is not None:
            props["CodeUri"] = code_uri
        if props.get("Events"):
            # Chalice's SQS events name their queues; the jobs queue is a GetAtt of every function already
            resource["DependsOn"] = sorted({*resource.get("DependsOn", []), "DeployDeadLetterQueue"})
        ours["Resources"][f"{logical}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "Properties": {
                "LogGroupName": _join("/aws/lambda/", {"Ref": logical}),
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        }
    resources.update(ours["Resources"])
    for resource in resources.values():
        if resource.get("Type") == "AWS::Serverless::Api":
            resource.setdefault("Properties", {})["TracingEnabled"] = True  # API Gateway's X-Ray segments
        body = resource.get("Properties", {}).get("DefinitionBody", {})
        for scheme in body.get("securityDefinitions", {}).values():
            authorizer = scheme.get("x-amazon-apigateway-authorizer")
            if isinstance(authorizer, dict):
                authorizer["authorizerResultTtlInSeconds"] = REVOCATION_WINDOW_S
    if "EndpointURL" in merged["Outputs"]:
        merged["Outputs"]["EndpointURL"]["Description"] = "The API's URL"
    return merged


LOCALSTACK_UNSUPPORTED = ("WorkerRepository", "ModelRepositoryTemplate")
"""Resources LocalStack's community edition cannot create (ECR is in its paid edition); the worker itself
needs an image there, so without ``WorkerImageUri`` its condition leaves it out too."""


def localstack_template(settings: Settings) -> dict[str, Any]:
    """The same stack for ``localstack/`` (its init hook deploys ``localstack/stack.json``, this output)."""
    template = stack_template(settings)
    for logical in LOCALSTACK_UNSUPPORTED:
        del template["Resources"][logical]
    del template["Outputs"]["WorkerRepositoryUri"]
    template["Description"] = "Modelport on LocalStack (see localstack/init/README.md)"
    return template


if __name__ == "__main__":  # python -m chalicelib.aws.template > localstack/stack.json
    import json
    import sys

    json.dump(localstack_template(Settings()), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
