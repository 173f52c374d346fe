"""Against a LocalStack a user runs (localstack/docker-compose.yml): the same infrastructure code and
adapters as on AWS. LocalStack cannot run on our machines, so these skip unless one answers at
``$MODELPORT_LOCALSTACK_URL`` (default http://127.0.0.1:4566) with its health document."""

from __future__ import annotations

import json
import os
import urllib.request

import boto3
import pytest

from chalicelib.aws.dynamodb import DynamoModelStore
from chalicelib.aws.infra import create_infrastructure, destroy_infrastructure
from chalicelib.core.records import ModelRecord
from chalicelib.settings import Settings
from tests.conftest import unique_settings

pytestmark = pytest.mark.localstack

URL = os.environ.get("MODELPORT_LOCALSTACK_URL", "http://127.0.0.1:4566")


def _localstack_answers() -> bool:
    try:
        with urllib.request.urlopen(f"{URL}/_localstack/health", timeout=2) as answer:
            return "services" in json.loads(answer.read())
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def settings() -> Settings:
    if not _localstack_answers():
        pytest.skip(f"no LocalStack answers at {URL} (see localstack/docker-compose.yml)")
    return unique_settings(URL)


def test_the_infrastructure_and_a_store_work_on_localstack(settings: Settings) -> None:
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=settings.region
    )
    outputs = create_infrastructure(settings, session)
    try:
        assert outputs["deploy_dlq_arn"].endswith(f"{settings.deploy_queue}-dlq")
        store = DynamoModelStore(settings.models_table, session.client("dynamodb", endpoint_url=URL))
        model = ModelRecord(name="iris", owner="acct_1", created_at="2026-12-01T00:00:00Z")
        store.create_model(model)
        assert store.get_model("iris").owner == "acct_1"
    finally:
        destroy_infrastructure(settings, session)


def test_the_init_hook_deployed_the_stack_from_the_template(settings: Settings) -> None:
    """localstack/init/10-modelport-stack.sh deploys localstack/stack.json on start-up."""
    cfn = boto3.client("cloudformation", endpoint_url=URL, region_name="us-east-1")
    stack = cfn.describe_stacks(StackName="modelport-local")["Stacks"][0]
    assert stack["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    tables = boto3.client("dynamodb", endpoint_url=URL, region_name="us-east-1").list_tables()["TableNames"]
    assert Settings().models_table in tables
