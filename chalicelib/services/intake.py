"""Model intake: a model directory (artifact + ``modelport.yaml``) -> its model config file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib import inspect as inspectors
from chalicelib.core.config import CONFIG_FILE, MAX_CONFIG_BYTES, ModelConfig, parse_config_yaml
from chalicelib.core.errors import ArtifactError, ConfigError
from chalicelib.core.files import sha256_file
from chalicelib.core.manifest import ArtifactFile, ModelConfigFile, build_manifest
from chalicelib.core.native import NativeContract

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


def inspect_dir(model_dir: Path, sandbox: Sandbox | None = None) -> tuple[ModelConfig, NativeContract]:
    config = load_config(model_dir)
    return config, inspectors.inspect_model(model_dir, config, sandbox)


def manifest_for_dir(model_dir: Path, *, version: int = 1, sandbox: Sandbox | None = None) -> ModelConfigFile:
    config = load_config(model_dir)
    _, paths = inspectors.detect(model_dir, config)
    native = inspectors.inspect_model(model_dir, config, sandbox)
    user_steps = inspectors.inspect_user_steps(model_dir, config)
    files = artifact_files(model_dir, paths)
    return build_manifest(config, native, files, version=version, user_steps=user_steps)
