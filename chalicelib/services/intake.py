"""Model intake: a model directory (artifact + ``modelport.yaml``) -> its model config file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib import inspect as inspectors
from chalicelib.core.config import (
    CONFIG_FILE,
    MAX_CONFIG_BYTES,
    ModelConfig,
    parse_config_yaml,
    runtime_refusal,
)
from chalicelib.core.config_file import ArtifactFile, ModelConfigFile, Tolerance, build_config_file
from chalicelib.core.errors import ArtifactError, ConfigError
from chalicelib.core.files import sha256_file
from chalicelib.core.native import Framework, NativeContract
from chalicelib.core.pipeline import with_plan

if TYPE_CHECKING:
    from chalicelib.core.ports import Sandbox


def load_config(model_dir: Path) -> ModelConfig:
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir} is not a directory", hint="pass the folder holding the model")
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"no {CONFIG_FILE} in {model_dir}",
            hint=f"create {path} with at least 'name: my-model'",
        )
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    return parse_config_yaml(text, source=str(path))


def artifact_files(model_dir: Path, paths: tuple[str, ...]) -> tuple[ArtifactFile, ...]:
    files = []
    for rel in paths:
        path = model_dir / rel
        if not path.is_file():
            raise ArtifactError(f"artifact {rel!r} not found in {model_dir}")
        files.append(ArtifactFile(path=rel, sha256=sha256_file(path), size_bytes=path.stat().st_size))
    return tuple(files)


@dataclass(frozen=True)
class Inspected:
    """One read of a model directory: its ``modelport.yaml``, what ``detect`` found, the native contract."""

    config: ModelConfig
    framework: Framework
    paths: tuple[str, ...]
    native: NativeContract


def inspect_dir(model_dir: Path, sandbox: Sandbox | None = None) -> Inspected:
    """Load the config and inspect the model, detecting its artifacts once."""
    config = load_config(model_dir)
    detected = inspectors.detect(model_dir, config)
    why = runtime_refusal(detected[0], config.runtime)
    if why is not None:
        raise ConfigError(f"{CONFIG_FILE}: {why} (the model is {detected[0]})", path="runtime")
    native = inspectors.inspect_model(model_dir, config, sandbox, detected=detected)
    return Inspected(config, *detected, native)


def config_file_for_dir(
    model_dir: Path,
    *,
    version: int = 1,
    sandbox: Sandbox | None = None,
    shared_stages: bool = False,
    inspected: Inspected | None = None,
    tolerance: Tolerance | None = None,
) -> ModelConfigFile:
    """Intake, for the CLI and the deployment alike: a model directory -> its model config file, with
    the pipeline plan decided (``shared_stages``: the platform has shared stage functions). ``inspected``
    is the directory's inspection when the caller has it already (the deployment checks the name first).

    ``runtime: onnx`` converts the model here, into the directory's ``CONVERTED_DIR``, and proves it answers
    like the estimator within ``tolerance`` (default ``Tolerance()``): the file then records the converted
    graph as its artifact, ONNX's environment and the native protocol."""
    found = inspected if inspected is not None else inspect_dir(model_dir, sandbox)
    config = found.config
    user_steps = inspectors.inspect_user_steps(model_dir, config)
    files = artifact_files(model_dir, found.paths)
    manifest = build_config_file(config, found.native, files, version=version, user_steps=user_steps)
    if config.runtime == "onnx":
        conversion, converted = inspectors.convert_model(model_dir, manifest, tolerance=tolerance)
        manifest = build_config_file(
            config, found.native, converted, version=version, user_steps=user_steps, conversion=conversion
        )
    return with_plan(manifest, shared_stages=shared_stages)


def restore_converted(model_dir: Path, manifest: ModelConfigFile) -> None:
    """The files ``manifest``'s image ships that are not in the bundle (a converted graph), made again when a
    resumed deployment extracted the bundle anew; nothing for a model served natively."""
    inspectors.restore_converted(model_dir, manifest)
