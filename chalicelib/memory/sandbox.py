"""The refusing twin of the ``Sandbox`` port: process mode, no docker engine, memory stacks."""

from __future__ import annotations

from chalicelib.core.errors import SandboxUnavailable
from chalicelib.core.native import NativeContract
from chalicelib.core.ports import Sandbox
from chalicelib.core.probe import ProbeRequest

WHERE = "a docker engine locally, the probe function on AWS"


class NoSandbox:
    """Refuses every artifact that needs code to open: nothing of a bundle runs in the control plane."""

    def __init__(self, why: str = "none is configured here") -> None:
        self.why = why

    def probe(self, request: ProbeRequest) -> NativeContract:
        what = "a pickle" if request.format == "pickle" else "a .skops file with trusted_types"
        raise SandboxUnavailable(
            f"{request.rel} is {what}: it can only be opened in a sandbox ({WHERE}), and {self.why}",
            hint="convert it to .skops with skops' default types, or deploy where a sandbox runs",
        )


def _implements_the_port(sandbox: NoSandbox) -> Sandbox:
    return sandbox
