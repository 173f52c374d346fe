"""The local stack: a Lambda emulator (Runtime API server + launchers) that runs model images or processes,
and the edge endpoint that puts it and moto behind one AWS endpoint (docs/local-stack.md).

Nothing here imports boto3 or chalice: the emulator may run anywhere (moto is imported by ``start_moto``
only, the docker SDK only through the client a ``ContainerLauncher`` is given).
"""

from chalicelib.local.edge import EdgeServer, MotoServer, start_moto
from chalicelib.local.emulator import Invocation, LambdaEmulator, LambdaError
from chalicelib.local.launchers import (
    ContainerLauncher,
    ImageResolver,
    ImageUnavailable,
    LaunchSpec,
    ProcessImage,
    ProcessImages,
    ProcessLauncher,
)
from chalicelib.local.runtime_api import InvokeResult, RuntimeApiServer, RuntimeProcess, start_runtime_process

__all__ = [
    "ContainerLauncher",
    "EdgeServer",
    "ImageResolver",
    "ImageUnavailable",
    "Invocation",
    "InvokeResult",
    "LambdaEmulator",
    "LambdaError",
    "LaunchSpec",
    "MotoServer",
    "ProcessImage",
    "ProcessImages",
    "ProcessLauncher",
    "RuntimeApiServer",
    "RuntimeProcess",
    "start_moto",
    "start_runtime_process",
]
