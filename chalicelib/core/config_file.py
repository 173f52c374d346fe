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


CONVERTED_DIR = ".modelport/converted"
"""Where intake writes a converted artifact in the model directory: a build output made again from the source
artifact whenever it is missing (hidden, so neither detected as a model nor bundled by ``modelport deploy``);
the image builder takes the files of a converted ``artifact`` from here, checked against their digests."""


class Tolerance(Frozen):
    """How far a converted model's numbers may be from the native model's: ``|converted - native| <=
    atol + rtol * |native|`` per value. The graph computes in float32 (24-bit mantissa, ~6e-8 relative
    rounding per value) where scikit-learn computes in float64; a graph compounds a few dozen roundings,
    so 1e-4 keeps orders of magnitude of margin while a wrong conversion (a dropped step, a class order,
    a changed weight) shows as differences of 1e-2 and more. Labels are compared exactly."""

    atol: float = Field(default=1e-4, ge=0)
    rtol: float = Field(default=1e-4, ge=0)


class Equivalence(Frozen):
    """What the deploy service checked before it let the converted graph serve the model."""

    tolerance: Tolerance
    sample_rows: int = Field(
        ge=0, description="rows from the protocol's example and the bundle's samples/, through the pre steps"
    )
    generated_rows: int = Field(ge=0, description="rows drawn uniformly within the features' ranges")
    seed: int = Field(description="of the generated rows: the same model gets the same rows")
    ranges: str = Field(description="where the features' ranges came from")
    max_abs_diff: float = Field(ge=0, description="the largest |converted - native| of any numeric output")
    max_at: str = Field(default="", description="where it was: output[row, column] (the row's origin)")
    skipped: tuple[str, ...] = Field(
        default=(), description="requests not checked, and why", exclude_if=lambda value: not value
    )


class Conversion(Frozen):
    """A scikit-learn model served as ONNX (``runtime: onnx``). ``artifact`` is then the converted graph (what
    the image ships and the runtime opens); ``source`` is the uploaded artifact it was made from. The native
    contract, and with it the protocol, stays the scikit-learn model's: the runtime gives the graph's outputs
    the native names, types and shapes (``outputs``)."""

    source: Artifact
    converter: str = Field(description="e.g. skl2onnx 1.20.0")
    target_opset: dict[str, int] = Field(description="the ONNX operator sets asked for, by domain")
    outputs: dict[str, str] = Field(description="native output name -> the graph's output it is read from")
    equivalence: Equivalence


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
    conversion: Conversion | None = Field(
        default=None,
        description="how the model was converted to ONNX (runtime: onnx); absent when it runs natively",
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
    conversion: Conversion | None = None,
) -> ModelConfigFile:
    """Compose the model config file from its three inputs (and the user steps' types, read from their
    source by ``chalicelib.inspect.inspect_user_steps``); pure and deterministic. With a ``conversion``,
    ``files`` are the converted graph's and the environment is ONNX's; the protocol is the native one."""
    files = tuple(sorted(files, key=lambda f: f.path))
    protocol, steps = resolve_chain(config, native, version=version, user_steps=user_steps)
    served: Framework = "onnx" if conversion is not None else native.framework
    return ModelConfigFile(
        name=config.name,
        version=version,
        description=config.description,
        artifact=Artifact(framework=served, files=files, digest=artifact_digest(files)),
        native=native,
        environment=resolve_environment(config, served),
        processing=config.processing,
        labels=config.labels,
        allow_pickle=config.allow_pickle,
        trusted_types=config.trusted_types,
        pipeline=config.pipeline,
        conversion=conversion,
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
