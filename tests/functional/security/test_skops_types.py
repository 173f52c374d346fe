"""A ``.skops`` file that needs a trusted type is opened in the docker sandbox (the refusals are in
tests/unit/security/test_skops_types.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.native import NativeContract
from chalicelib.core.probe import ProbeRequest
from chalicelib.inspect import inspect_model
from tests.unit.security.test_skops_types import _tree_skops


class Recording:
    """A sandbox that records what it is asked to open, then asks the real one."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: list[ProbeRequest] = []

    def probe(self, request: ProbeRequest) -> NativeContract:
        self.requests.append(request)
        result: NativeContract = self.inner.probe(request)
        return result


@pytest.mark.docker
def test_an_allowlisted_non_default_type_is_opened_in_the_sandbox(
    tmp_path: Path, docker_sandbox: Any
) -> None:
    config = _tree_skops(tmp_path)
    sandbox = Recording(docker_sandbox)
    contract = inspect_model(tmp_path, config, sandbox)
    assert [(r.rel, r.format) for r in sandbox.requests] == [("model.skops", "skops")]
    assert contract.model_type == "sklearn.tree.DecisionTreeRegressor"
    assert contract.metadata["format"] == "skops"
    assert contract.n_features == 2
