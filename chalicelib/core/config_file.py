"""The model config file: the versioned deployment manifest every later stage reads.

One pydantic model, deterministic to serialize (no clocks, no random ids, stable key order), with its JSON
Schema generated into ``schemas/model-config.schema.json``. The pipeline plan is resolved by intake; the
container and function slots are empty until the image builder and the function manager fill them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field

from chalicelib.core.chain import Protocol, resolve_chain
from chalicelib.core.config import ModelConfig, Processing
from chalicelib.core.environment import ResolvedEnvironment, resolve_environment
from chalicelib.core.native import Framework, NativeContract
from chalicelib.core.protocol import Frozen
from chalicelib.core.steps import BoundStep, UserSignature

SCHEMA_VERSION: Literal["modelport.dev/v1"] = "modelport.dev/v1"


class ArtifactFile(Frozen):
    path: str
    sha256: str
    size_bytes: int


class Artifact(Frozen):
    framework: Framework
    files: tuple[ArtifactFile, ...]
    digest: str = Field(description="sha256 over the sorted (path, sha256) of every file")


class ContainerAssociation(Frozen):
    """The image this model version runs in (filled by the image builder)."""

    environment_image: str = Field(description="the shared image of the environment fingerprint")
    image_uri: str
    image_digest: str
    size_bytes: int
    steps_image: str | None = Field(
        default=None,
        description="the shared steps image (runtime and step packages, no model) that a chained pipeline's "
        "pre and post functions run; the model image then carries no step packages",
        exclude_if=lambda value: value is None,
    )


class DeployedFunction(Frozen):
    role: Literal["fused", "pre", "model", "post"]
    function_name: str
    function_arn: str
    version: str | None = None


class DeployedFunctions(Frozen):
    """What runs this model version (filled by the function manager)."""

    mode: Literal["fused", "chained"]
    functions: tuple[DeployedFunction, ...]
    state_machine_arn: str | None = None


class PipelinePlan(Frozen):
    """How this version runs, decided once when its config file is generated
    (``core.pipeline.plan_pipeline``); the image builder and the function manager only read it."""

    mode: Literal["fused", "chained"]
    reason: str = Field(description="why: the config's choice, or the first ``auto`` rule that applied")
    shared_steps: bool = Field(
        description="pre and post run on the shared steps image's stage functions (a chain where the "
        "platform has them): the model image then carries no step packages"
    )


class ModelConfigFile(Frozen):
    """The model config file of one model version."""

    schema_version: Literal["modelport.dev/v1"] = SCHEMA_VERSION
    name: str
    version: int = Field(ge=1)
    description: str = ""
    artifact: Artifact
    native: NativeContract
    environment: ResolvedEnvironment
    processing: Processing
    labels: tuple[str, ...] | None
    allow_pickle: bool
    trusted_types: tuple[str, ...]
    pipeline: Literal["auto", "chained", "fused"]
    pipeline_plan: PipelinePlan | None = Field(
        default=None,
        description="the pipeline as decided for this deployment (absent until intake resolves it)",
        exclude_if=lambda value: value is None,
    )
    protocol: Protocol
    steps: tuple[BoundStep, ...] = Field(
        description="the processing steps in chain order with the arguments their runtime is built from, "
        "resolved with the protocol (the owner's: not in a grantee's view)"
    )
    container: ContainerAssociation | None = None
    deployment: DeployedFunctions | None = None

    def to_json(self) -> str:
        return json.dumps(self.to_data(), indent=2, ensure_ascii=False) + "\n"

    def to_yaml(self) -> str:
        from chalicelib.core.yamltext import dump_readable  # PyYAML: only where YAML is written

        return dump_readable(self.to_data())

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @property
    def digest(self) -> str:
        """Content address of this file, for image labels and change detection."""
        return "sha256:" + hashlib.sha256(self.to_json().encode()).hexdigest()


def artifact_digest(files: tuple[ArtifactFile, ...]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return "sha256:" + h.hexdigest()


def build_config_file(
    config: ModelConfig,
    native: NativeContract,
    files: tuple[ArtifactFile, ...],
    *,
    version: int = 1,
    user_steps: tuple[UserSignature, ...] = (),
) -> ModelConfigFile:
    """Compose the model config file from its three inputs (and the user steps' types, read from their
    source by ``chalicelib.inspect.inspect_user_steps``); pure and deterministic."""
    files = tuple(sorted(files, key=lambda f: f.path))
    protocol, steps = resolve_chain(config, native, version=version, user_steps=user_steps)
    return ModelConfigFile(
        name=config.name,
        version=version,
        description=config.description,
        artifact=Artifact(framework=native.framework, files=files, digest=artifact_digest(files)),
        native=native,
        environment=resolve_environment(config, native.framework),
        processing=config.processing,
        labels=config.labels,
        allow_pickle=config.allow_pickle,
        trusted_types=config.trusted_types,
        pipeline=config.pipeline,
        protocol=protocol,
        steps=steps,
    )


def manifest_json_schema() -> dict[str, Any]:
    schema = ModelConfigFile.model_json_schema(mode="serialization")
    schema["$id"] = "https://modelport.dev/schemas/model-config.schema.json"
    schema["title"] = "Modelport model config file"
    return schema


def config_json_schema() -> dict[str, Any]:
    schema = ModelConfig.model_json_schema(mode="validation")
    schema["$id"] = "https://modelport.dev/schemas/modelport.schema.json"
    schema["title"] = "modelport.yaml"
    return schema


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
