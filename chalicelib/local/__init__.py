"""The local stack: a Lambda emulator (Runtime API server + launchers) that runs model images or processes.

Nothing here imports boto3 or chalice: the emulator may run anywhere.
"""

from chalicelib.local.runtime_api import InvokeResult, RuntimeApiServer, RuntimeProcess, start_runtime_process

__all__ = ["InvokeResult", "RuntimeApiServer", "RuntimeProcess", "start_runtime_process"]
