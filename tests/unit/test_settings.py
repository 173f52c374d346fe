"""A deployed stage refuses to start on the twins; the stages of .chalice/config.json name real adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.core.errors import ConfigError
from chalicelib.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stage", ["dev", "prod", "staging"])
def test_a_deployed_stage_on_the_twins_is_a_start_up_error_naming_the_variable(stage: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^MODELPORT_IMAGE_BUILDER is unset or 'memory' on stage '{stage}'"
    ):
        Settings.from_env({"MODELPORT_STAGE": stage, "MODELPORT_FUNCTIONS": "lambda"})
    with pytest.raises(ConfigError, match=rf"^MODELPORT_FUNCTIONS is unset or 'memory' on stage '{stage}'"):
        Settings(stage=stage, image_builder="docker", functions="memory")
    with pytest.raises(ConfigError, match=rf"^MODELPORT_REGISTRY is unset on stage '{stage}'"):
        Settings(stage=stage, image_builder="oci", functions="lambda")
    built = Settings.from_env(
        {
            "MODELPORT_STAGE": stage,
            "MODELPORT_IMAGE_BUILDER": "oci",
            "MODELPORT_REGISTRY": "ecr",
            "MODELPORT_FUNCTIONS": "lambda",
        }
    )
    assert (built.image_builder, built.registry, built.functions) == ("oci", "ecr", "lambda")


def test_the_local_stage_keeps_the_twins() -> None:
    assert (Settings().image_builder, Settings().functions) == ("memory", "memory")
    assert Settings.from_env({}).stage == "local"


@pytest.mark.parametrize("stage", ["local", "dev", "prod"])
def test_every_stage_of_the_chalice_config_starts(stage: str) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    settings = Settings.from_env(config["stages"][stage]["environment_variables"])
    assert settings.stage == stage
    if stage != "local":
        assert (settings.image_builder, settings.registry, settings.functions) == ("oci", "ecr", "lambda")
        assert settings.sandbox == "lambda"  # the probe function: its role and staging are in the policy


def test_an_unknown_image_builder_is_a_start_up_error() -> None:
    with pytest.raises(ConfigError, match=r"^MODELPORT_IMAGE_BUILDER='dokcer' names no image builder"):
        Settings.from_env({"MODELPORT_IMAGE_BUILDER": "dokcer"})
