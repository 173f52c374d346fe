"""The refusing twin of the ``Sandbox`` port: process mode, no docker engine, memory stacks."""

from __future__ import annotations

from chalicelib.core.native import NativeContract
from chalicelib.core.ports import Sandbox
from chalicelib.core.probe import ProbeRequest, no_sandbox


class NoSandbox:
    """Refuses every artifact that needs code to open: nothing of a bundle runs in the control plane."""

    def __init__(self, why: str = "none is configured here") -> None:
        self.why = why

    def probe(self, request: ProbeRequest) -> NativeContract:
        raise no_sandbox(request, self.why)


def _implements_the_port(sandbox: NoSandbox) -> Sandbox:
    return sandbox
