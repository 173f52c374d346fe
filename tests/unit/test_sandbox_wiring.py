"""Which sandbox the composition root picks from settings."""

from __future__ import annotations

import pytest

from chalicelib.core.errors import ConfigError
from chalicelib.core.probe import NoSandbox
from chalicelib.settings import Settings
from chalicelib.wiring import aws_container, memory_container


def test_settings_read_the_sandbox_and_the_probe_role() -> None:
    settings = Settings.from_env(
        {"MODELPORT_SANDBOX": "lambda", "MODELPORT_PROBE_ROLE": "arn:aws:iam::1:role/p"}
    )
    assert (settings.sandbox, settings.probe_role) == ("lambda", "arn:aws:iam::1:role/p")
    assert Settings.from_env({}).sandbox is None


def test_without_the_docker_builder_there_is_no_sandbox() -> None:
    assert isinstance(aws_container(Settings()).sandbox, NoSandbox)
    assert isinstance(aws_container(Settings(image_builder="process")).sandbox, NoSandbox)
    assert isinstance(memory_container().sandbox, NoSandbox)


@pytest.mark.parametrize("kind", ["docker", "lambda", "chroot"])
def test_a_sandbox_the_image_builder_cannot_serve_is_a_config_error(kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"^MODELPORT_SANDBOX={kind} needs an image builder that builds"):
        aws_container(Settings(sandbox=kind))
