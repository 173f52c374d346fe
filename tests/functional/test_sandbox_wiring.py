"""The composition root with the docker builder picks the docker sandbox (needs an engine; the rest of the
choice is in tests/unit/test_sandbox_wiring.py)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core.probe import NoSandbox
from chalicelib.settings import Settings
from chalicelib.wiring import aws_container


@pytest.mark.docker
def test_the_docker_builder_brings_the_docker_sandbox(engine: Any) -> None:
    from chalicelib.aws.sandbox import LambdaSandbox
    from chalicelib.docker.sandbox import DockerSandbox

    assert isinstance(aws_container(Settings(image_builder="docker")).sandbox, DockerSandbox)
    assert isinstance(aws_container(Settings(image_builder="docker", sandbox="none")).sandbox, NoSandbox)
    lambda_sandbox = aws_container(Settings(image_builder="docker", sandbox="lambda")).sandbox
    assert isinstance(lambda_sandbox, LambdaSandbox)
    assert lambda_sandbox.role_arn == Settings().probe_role
