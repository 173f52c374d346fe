"""The deploy worker as the local stack runs it on an engine: a container-image function in the emulator.

The stack builds the worker's image daemonlessly (``chalicelib.worker.image``) into the local registry,
creates the function through the Lambda API at the edge as the template does on AWS, and its event pump
invokes it with SQS events, honouring ``batchItemFailures`` (``lambda_target``). The function's container is
the emulator's ContainerLauncher's: host network, read-only root, a /tmp tmpfs and no docker socket, so
whatever it builds it builds with nothing but Python and the Registry HTTP API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chalicelib.core.errors import FunctionFailed
from chalicelib.core.ports import Progress

WORKER_TIMEOUT_S = 900
# Lambda's 3008 MB (the template's) plus room for /tmp: a container's tmpfs pages count against its memory
# limit here, Lambda's ephemeral storage does not, and the worker keeps wheelhouses and layers there.
WORKER_MEMORY_MB = 6144


def worker_environment(settings: Any, registry: str) -> dict[str, str]:
    """The stack's settings as the worker function's variables: the daemonless builder, Lambda functions.

    The region and the (local dummy) credentials are Lambda's to set, as on AWS (the emulator does)."""
    from chalicelib.settings import settings_env

    wired = replace(settings, image_builder="oci", registry=registry, functions="lambda", sandbox="lambda")
    env = settings_env(wired)
    env.pop("MODELPORT_ADMIN_KEY", None)  # the worker never needs it (tests/unit/security/test_keys.py)
    for reserved in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        env.pop(reserved, None)
    return env


def create_worker_function(lambda_client: Any, settings: Any, registry: str, progress: Progress) -> str:
    """Build the worker's image into ``registry`` and create (or update) the function; returns its image."""
    from chalicelib.aws.template import WORKER_EPHEMERAL_MB
    from chalicelib.oci.base import ensure_local_base
    from chalicelib.oci.builder import OciImageBuilder
    from chalicelib.worker.image import build_worker_image, worker_recipe

    recipe = worker_recipe()
    base = ensure_local_base(registry, recipe.python, progress)
    image = build_worker_image(OciImageBuilder(registry, base_image=base), progress, recipe)
    config = {
        "Role": settings.function_role,
        "Timeout": WORKER_TIMEOUT_S,
        "MemorySize": WORKER_MEMORY_MB,
        "EphemeralStorage": {"Size": WORKER_EPHEMERAL_MB},
        "Environment": {"Variables": worker_environment(settings, registry)},
    }
    try:
        lambda_client.create_function(
            FunctionName=settings.worker_function, PackageType="Image", Code={"ImageUri": image}, **config
        )
    except lambda_client.exceptions.ResourceConflictException:
        lambda_client.update_function_configuration(FunctionName=settings.worker_function, **config)
        lambda_client.update_function_code(FunctionName=settings.worker_function, ImageUri=image)
    progress(f"deploy worker: function {settings.worker_function} from {image}")
    return image


def lambda_target(lambda_client: Any, function_name: str) -> Callable[[dict[str, Any], Any], Any]:
    """An event pump handler that invokes ``function_name`` with the batch, as the event source mapping does.

    A function error raises (the whole batch is retried); an answer is returned so the pump reads its
    ``batchItemFailures``."""

    def invoke(event: dict[str, Any], context: Any) -> Any:
        answer = lambda_client.invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
        )
        payload = answer["Payload"].read()
        if answer.get("FunctionError"):
            raise FunctionFailed(f"{function_name} failed: {payload[:500]!r}")
        return json.loads(payload) if payload else None

    return invoke
