"""The stack's template: cfn-lint clean on its own and merged into Chalice's output; it holds the worker as an
image function fed by the deploy queue, the tables as infra.py creates them, and least-privilege roles."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.aws import infra
from chalicelib.aws.template import (
    LOG_DELIVERY_ACTIONS,
    LOG_RETENTION_DAYS,
    REGISTRY_PUSH_ACTIONS,
    TRACE_WRITE_ACTIONS,
    merge,
    stack_template,
    worker_env,
)
from chalicelib.core.errors import ConfigError
from chalicelib.settings import REVOCATION_WINDOW_S, Settings

SETTINGS = Settings(
    stage="dev",
    image_builder="oci",
    registry="ecr",
    functions="lambda",
    sandbox="lambda",
    admin_key_secret="modelport/admin-key",
)

SAM: dict[str, Any] = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Transform": "AWS::Serverless-2016-10-31",
    "Resources": {
        "APIHandler": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Runtime": "python3.11",
                "Handler": "app.app",
                "CodeUri": "./deployment.zip",
                "Environment": {"Variables": {"MODELPORT_STAGE": "dev", "MODELPORT_MODELS_TABLE": "x"}},
            },
        },
        "Authorizer": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Runtime": "python3.11",
                "Handler": "chalicelib.api.auth.api_key",
                "CodeUri": "./deployment.zip",
                "Environment": {"Variables": {"MODELPORT_ADMIN_KEY_SECRET": "modelport/admin-key"}},
            },
        },
        "RestAPI": {
            "Type": "AWS::Serverless::Api",
            "Properties": {
                "StageName": "dev",
                "DefinitionBody": {
                    "swagger": "2.0",
                    "info": {"title": "modelport", "version": "1"},
                    "paths": {},
                    "securityDefinitions": {
                        "authorizer": {
                            "type": "apiKey",
                            "name": "Authorization",
                            "in": "header",
                            "x-amazon-apigateway-authorizer": {
                                "type": "token",
                                "authorizerResultTtlInSeconds": 300,
                            },
                        }
                    },
                },
            },
        },
    },
}


def lint(template: dict[str, Any]) -> list[str]:
    from cfnlint.api import lint as cfn_lint

    return [str(m) for m in cfn_lint(json.dumps(template), regions=["us-east-1"])]


def test_our_template_alone_and_merged_is_cfn_lint_clean() -> None:
    assert lint(stack_template(SETTINGS)) == []
    assert lint(merge(SAM, SETTINGS, code_uri={"Bucket": "b", "Key": "k.zip"})) == []


def test_a_broken_template_is_caught_by_the_lint() -> None:
    broken = stack_template(SETTINGS)
    broken["Resources"]["DeployWorker"]["Properties"]["PackageType"] = "Docker"
    assert lint(broken)


def test_the_worker_is_an_image_function_fed_by_the_deploy_queue() -> None:
    resources = stack_template(SETTINGS)["Resources"]
    worker = resources["DeployWorker"]["Properties"]
    assert worker["PackageType"] == "Image" and worker["Code"] == {"ImageUri": {"Ref": "WorkerImageUri"}}
    assert worker["Timeout"] == infra.WORKER_TIMEOUT_S and worker["Timeout"] <= infra.VISIBILITY_TIMEOUT_S
    assert worker["EphemeralStorage"]["Size"] >= 4096
    env = worker["Environment"]["Variables"]
    assert {
        k: env[k]
        for k in (
            "MODELPORT_IMAGE_BUILDER",
            "MODELPORT_REGISTRY",
            "MODELPORT_FUNCTIONS",
            "MODELPORT_SANDBOX",
            "MODELPORT_STAGE",
        )
    } == {
        "MODELPORT_IMAGE_BUILDER": "oci",
        "MODELPORT_REGISTRY": "ecr",
        "MODELPORT_FUNCTIONS": "lambda",
        "MODELPORT_SANDBOX": "lambda",
        "MODELPORT_STAGE": "dev",
    }
    assert env["MODELPORT_MODELS_TABLE"] == {"Ref": "ModelsTable"}
    assert "MODELPORT_ADMIN_KEY" not in worker_env(Settings(admin_key="k"))
    assert not any(k.startswith("MODELPORT_ADMIN_KEY") for k in env)
    mapping = resources["DeployWorkerQueueMapping"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["DeployQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = resources["DeployQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == infra.VISIBILITY_TIMEOUT_S
    assert queue["RedrivePolicy"]["maxReceiveCount"] == infra.MAX_RECEIVE_COUNT
    rules = resources["BundleBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert rules[0]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": infra.UPLOAD_PREFIX}]


def test_the_tables_have_the_keys_and_index_infra_creates() -> None:
    resources = stack_template(SETTINGS)["Resources"]
    tables = {
        r["Properties"]["TableName"]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::DynamoDB::Table"
    }
    assert set(tables) == {
        SETTINGS.accounts_table,
        SETTINGS.models_table,
        SETTINGS.deployments_table,
        SETTINGS.associations_table,
        SETTINGS.jobs_table,
        SETTINGS.usage_table,
    }
    for name, props in tables.items():
        assert [k["AttributeName"] for k in props["KeySchema"]] == ["pk", "sk"]
        indexes = [i["IndexName"] for i in props.get("GlobalSecondaryIndexes", [])]
        no_index = (SETTINGS.associations_table, SETTINGS.usage_table)
        assert indexes == ([] if name in no_index else [infra.GSI1])
        ttl = props.get("TimeToLiveSpecification")
        assert ttl == (
            {"Enabled": True, "AttributeName": "expires_at"} if name == SETTINGS.jobs_table else None
        )


def test_repositories_expire_old_images_and_data_buckets_are_retained() -> None:
    resources = stack_template(SETTINGS)["Resources"]
    lifecycle = json.loads(
        resources["WorkerRepository"]["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"]
    )
    assert lifecycle["rules"][0]["action"] == {"type": "expire"}
    models = resources["ModelRepositoryTemplate"]["Properties"]
    assert models["Prefix"] == "modelport" and json.loads(models["LifecyclePolicy"]) == lifecycle
    for name in ("BundleBucket", "ArtifactBucket"):
        assert resources[name]["DeletionPolicy"] == "Retain"


def _actions(role: dict[str, Any]) -> set[str]:
    return {
        a
        for p in role["Properties"].get("Policies", [])
        for s in p["PolicyDocument"]["Statement"]
        for a in s["Action"]
    }


def test_roles_grant_least_privilege() -> None:
    resources = stack_template(SETTINGS)["Resources"]
    assert "Policies" not in resources["ProbeRole"]["Properties"]
    assert _actions(resources["FunctionRole"]) == {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        *TRACE_WRITE_ACTIONS,
    }
    assert _actions(resources["StatesRole"]) == {
        "lambda:InvokeFunction",
        *LOG_DELIVERY_ACTIONS,
        *TRACE_WRITE_ACTIONS,
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
    }
    worker = _actions(resources["WorkerRole"])
    assert set(REGISTRY_PUSH_ACTIONS) <= worker
    assert not any(a.endswith("*") or a in ("dynamodb:Scan", "s3:DeleteObject") for a in worker)
    statements = [
        s for p in resources["WorkerRole"]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
    ]
    # only what takes no resource is granted on "*": the registry login, log delivery and X-Ray's writes
    assert [s["Sid"] for s in statements if "*" in s["Resource"]] == [
        "RegistryLogin",
        "ExecutionLogDelivery",
        "Tracing",
    ]
    for role in ("FunctionRole", "StatesRole", "WorkerRole"):
        wildcard = {
            a
            for p in resources[role]["Properties"]["Policies"]
            for s in p["PolicyDocument"]["Statement"]
            if "*" in s["Resource"]
            for a in s["Action"]
        }
        assert wildcard <= {"ecr:GetAuthorizationToken", *LOG_DELIVERY_ACTIONS} | {
            a for a in wildcard if a.startswith("xray:")
        }, role


def test_functions_and_state_machines_are_traced_and_machines_log_to_one_group() -> None:
    """X-Ray on the template's functions (the worker; Chalice's, merged) and API Gateway's stage; the
    worker is told the shared execution-log group of the machines it makes, which the template creates."""
    resources = stack_template(SETTINGS)["Resources"]
    assert resources["DeployWorker"]["Properties"]["TracingConfig"] == {"Mode": "Active"}
    group = resources["StatesLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"] == {
        "LogGroupName": "/aws/vendedlogs/states/modelport-dev",
        "RetentionInDays": LOG_RETENTION_DAYS,
    }
    env = resources["DeployWorker"]["Properties"]["Environment"]["Variables"]
    assert env["MODELPORT_STATES_LOG_GROUP"] == {"Fn::GetAtt": ["StatesLogGroup", "Arn"]}
    merged = merge(SAM, SETTINGS, code_uri={"Bucket": "b", "Key": "k.zip"})["Resources"]
    for name in ("APIHandler", "Authorizer"):
        assert merged[name]["Properties"]["Tracing"] == "Active"
        variables = merged[name]["Properties"]["Environment"]["Variables"]
        assert variables["MODELPORT_STATES_LOG_GROUP"] == {"Fn::GetAtt": ["StatesLogGroup", "Arn"]}
    assert merged["RestAPI"]["Properties"]["TracingEnabled"] is True


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_chalice_functions_may_write_their_traces(stage: str) -> None:
    """Chalice's roles are the policy files (autogen_policy is off): each may send X-Ray its segments, and
    the stage asks Chalice for active tracing too (``xray``)."""
    from pathlib import Path

    root = Path(__file__).parents[2] / ".chalice"
    config = json.loads((root / "config.json").read_text())
    assert config["stages"][stage]["xray"] is True
    for name in (f"policy-{stage}.json", f"policy-deploy-{stage}.json", f"policy-authorizer-{stage}.json"):
        statements = json.loads((root / name).read_text())["Statement"]
        (tracing,) = [s for s in statements if s.get("Sid") == "Tracing"]
        assert (tracing["Action"], tracing["Resource"]) == (list(TRACE_WRITE_ACTIONS), ["*"]), name
        delivery = [s for s in statements if s.get("Sid") == "ExecutionLogDelivery"]
        creates = any("states:CreateStateMachine" in s["Action"] for s in statements)
        assert [d["Action"] for d in delivery] == ([list(LOG_DELIVERY_ACTIONS)] if creates else []), name


def test_merging_wires_the_api_to_our_resources_and_the_authorizer_ttl() -> None:
    merged = merge(SAM, SETTINGS, code_uri={"Bucket": "b", "Key": "k.zip"})
    api = merged["Resources"]["APIHandler"]["Properties"]
    assert api["Environment"]["Variables"]["MODELPORT_MODELS_TABLE"] == {"Ref": "ModelsTable"}
    assert api["CodeUri"] == {"Bucket": "b", "Key": "k.zip"}
    authorizer = merged["Resources"]["Authorizer"]["Properties"]["Environment"]["Variables"]
    assert authorizer["MODELPORT_ADMIN_KEY_SECRET"] == {"Ref": "AdminKeySecret"}
    body = merged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    ttl = body["securityDefinitions"]["authorizer"]["x-amazon-apigateway-authorizer"]
    assert ttl["authorizerResultTtlInSeconds"] == REVOCATION_WINDOW_S
    assert "APIHandlerLogGroup" in merged["Resources"]
    assert SAM["Resources"]["APIHandler"]["Properties"]["CodeUri"] == "./deployment.zip"  # not mutated


def test_bad_names_never_reach_the_template() -> None:
    with pytest.raises(ConfigError, match="bucket name"):
        stack_template(Settings(bundle_bucket="Not_A_Bucket"))
    with pytest.raises(ConfigError, match="table name"):
        stack_template(Settings(models_table='x"}, {"Evil'))


def test_localstack_deploys_the_same_template_as_generated() -> None:
    from pathlib import Path

    from chalicelib.aws.template import localstack_template

    committed = json.loads((Path(__file__).parents[2] / "localstack" / "stack.json").read_text())
    assert committed == localstack_template(Settings()), (
        "python -m chalicelib.aws.template > localstack/stack.json"
    )
    ours = stack_template(Settings())["Resources"]
    assert set(ours) - set(committed["Resources"]) == {"WorkerRepository", "ModelRepositoryTemplate"}
    assert lint(committed) == []
