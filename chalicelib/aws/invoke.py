"""Runs invocations on AWS Lambda (fused) or an Express state machine (chained)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.core.errors import FunctionFailed, FunctionTimedOut
from chalicelib.core.manifest import Deployment as DeployedFunctions


class LambdaInvoker:
    """``lambda_client`` and ``sfn_client`` are boto3 clients (the latter with inject_host_prefix off)."""

    def __init__(self, lambda_client: Any, sfn_client: Any) -> None:
        self.lambda_client = lambda_client
        self.sfn_client = sfn_client

    def invoke(self, deployment: DeployedFunctions, event: dict[str, object]) -> dict[str, object]:
        payload = json.dumps(event, separators=(",", ":"))
        try:
            if deployment.mode == "chained" and deployment.state_machine_arn:
                return self._execute(deployment.state_machine_arn, payload)
            return self._invoke(deployment, payload)
        except (ClientError, BotoCoreError) as exc:
            raise FunctionFailed(f"could not invoke the model: {exc}") from None

    def _invoke(self, deployment: DeployedFunctions, payload: str) -> dict[str, object]:
        fn = deployment.functions[0]
        kwargs: dict[str, Any] = {"FunctionName": fn.function_arn, "Payload": payload}
        if fn.version:
            kwargs["Qualifier"] = fn.version
        response = self.lambda_client.invoke(**kwargs)
        body = response["Payload"].read()
        if response.get("FunctionError"):
            raise _function_error(body)
        return _document(body)

    def _execute(self, arn: str, payload: str) -> dict[str, object]:
        response = self.sfn_client.start_sync_execution(stateMachineArn=arn, input=payload)
        status = response.get("status")
        if status == "SUCCEEDED":
            return _document(response.get("output", "{}").encode())
        cause = response.get("cause") or response.get("error") or status
        if status == "TIMED_OUT" or "Sandbox.Timedout" in str(cause) or "timed out" in str(cause):
            raise FunctionTimedOut(f"the model's pipeline timed out: {cause}")
        raise FunctionFailed(f"the model's pipeline failed: {response.get('error', '')} {cause}".strip())


def _document(body: bytes) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise FunctionFailed("the model's function answered something that is not JSON") from None
    if not isinstance(doc, dict):
        raise FunctionFailed("the model's function answered something that is not a response document")
    return doc


def _function_error(body: bytes) -> Exception:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    kind = str(doc.get("errorType", "Unhandled"))
    message = str(doc.get("errorMessage", body[:200].decode(errors="replace")))
    if kind == "Sandbox.Timedout" or "timed out" in message:
        return FunctionTimedOut(f"the model's function timed out: {message}")
    return FunctionFailed(f"the model's function failed: {kind}: {message}")
