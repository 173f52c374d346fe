"""Inspectors: read a model artifact's native contract without running the user's code.

Detection looks only at the top level of the model directory, so helper files in sub-directories
(steps, test data) never make the choice ambiguous. Every inspector module imports its heavy library
lazily: importing this package must stay cheap for the CLI and the API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib.core.errors import ArtifactError, UnsupportedFramework
from chalicelib.core.native import FRAMEWORKS, Framework, NativeContract
from chalicelib.core.probe import NoSandbox

if TYPE_CHECKING:
    from chalicelib.core.config import ModelConfig
    from chalicelib.core.config_file import ArtifactFile, Conversion, ModelConfigFile, Tolerance
    from chalicelib.core.ports import Sandbox
    from chalicelib.core.steps import UserSignature

__all__ = ["ACCEPTED", "convert_model", "detect", "inspect_model", "inspect_user_steps", "restore_converted"]

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
ACCEPTED = (
    ".onnx (onnx), .skops/.joblib/.pkl/.pickle (sklearn), .json/.ubj (xgboost), "
    ".txt model text (lightgbm), predict.py (python)"
)
_SUFFIXES: dict[Framework, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "sklearn": (".skops", *PICKLE_SUFFIXES),
    "xgboost": (".json", ".ubj"),
    "lightgbm": (".txt",),
    "python": (".py",),
}
# Formats people try to deploy that no inspector reads: say so instead of "no model file found".
_FOREIGN = (
    ".pt", ".pth", ".h5", ".keras", ".pb", ".tflite", ".safetensors", ".bin", ".model",
    ".mlmodel", ".cbm", ".gguf", ".ckpt", ".npz",
)  # fmt: skip
_SNIFF_BYTES = 4096
# XGBoost writes "learner" as the document's first key; nothing is parsed just to decide.
_XGBOOST_PREFIX = re.compile(rb'^(?:\xef\xbb\xbf)?\s*\{\s*"learner"\s*:\s*\{')


def _is_xgboost_json(path: Path) -> bool:
    """Judged by the first bytes only: parsing a hostile file to classify it would be the attack."""
    with path.open("rb") as fh:
        return _XGBOOST_PREFIX.match(fh.read(_SNIFF_BYTES)) is not None


def _is_lightgbm_text(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.readline(64).strip() == b"tree"


def _kind(path: Path) -> Framework | None:
    """The framework a file is a model of, judged by name and (for .json/.txt) content."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".skops" or suffix in PICKLE_SUFFIXES:
        return "sklearn"
    if suffix == ".ubj" or (suffix == ".json" and _is_xgboost_json(path)):
        return "xgboost"
    if suffix == ".txt" and _is_lightgbm_text(path):
        return "lightgbm"
    if path.name == "predict.py":
        return "python"
    return None


def _inside(model_dir: Path, path: Path, rel: str) -> Path:
    """Resolve ``path`` and refuse it when a symlink leads out of the model directory."""
    resolved = path.resolve()
    if not resolved.is_relative_to(model_dir.resolve()):
        raise ArtifactError(
            f"{rel} is a symlink to {resolved}, outside {model_dir}",
            hint="copy the file into the model directory",
        )
    return resolved


def _scan(model_dir: Path, framework: Framework | None) -> tuple[Framework, tuple[str, ...]]:
    if not model_dir.is_dir():
        raise ArtifactError(f"model directory {model_dir} does not exist or is not a directory")
    found: list[tuple[str, Framework]] = []
    foreign: list[str] = []
    for entry in sorted(model_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        kind = _kind(entry)
        if kind is None:
            if entry.suffix.lower() in _FOREIGN:
                foreign.append(entry.name)
            continue
        if framework is None or kind == framework:
            _inside(model_dir, entry, entry.name)
            found.append((entry.name, kind))
    if not found:
        if foreign and framework is None:
            raise UnsupportedFramework(
                f"{foreign[0]}: {Path(foreign[0]).suffix} models are not supported; supported: {ACCEPTED}"
            )
        what = f"{framework} model file" if framework else "model file"
        raise ArtifactError(f"no {what} found in {model_dir}; accepted: {ACCEPTED}")
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise ArtifactError(
            f"several model files in {model_dir}: {names}",
            hint="set artifacts: (and framework:) in modelport.yaml to pick one",
        )
    ((name, kind),) = found
    return kind, (name,)


def _check_configured(model_dir: Path, config: ModelConfig) -> tuple[Framework, tuple[str, ...]]:
    artifacts = tuple(sorted(config.artifacts or ()))
    kinds: dict[str, Framework | None] = {}
    for rel in artifacts:
        path = model_dir / rel
        if not path.is_file():
            raise ArtifactError(f"artifact {rel!r} not found in {model_dir}")
        kinds[rel] = _kind(_inside(model_dir, path, rel))
    framework = config.framework
    if framework is None:
        detected = sorted({k for k in kinds.values() if k is not None})
        if not detected:
            suffix = Path(artifacts[0]).suffix or "(no extension)"
            raise UnsupportedFramework(
                f"cannot tell the framework of {artifacts[0]}: no inspector reads this {suffix} "
                f"file; supported: {ACCEPTED}",
                hint="or set framework: in modelport.yaml",
            )
        if len(detected) > 1:
            raise ArtifactError(
                "artifacts mix frameworks (" + ", ".join(detected) + ")",
                hint="set framework: in modelport.yaml",
            )
        framework = detected[0]
    models = [rel for rel in artifacts if Path(rel).suffix.lower() in _SUFFIXES[framework]]
    if framework == "python":
        # A predictor ships its weights as extra artifacts; exactly one of them is the code.
        if len(models) != 1:
            raise ArtifactError(
                "framework python needs exactly one .py artifact (the predictor), got "
                + (", ".join(models) or "none")
            )
        return framework, artifacts
    for rel in artifacts:
        if rel not in models or kinds[rel] not in (framework, None):
            raise ArtifactError(
                f"artifact {rel!r} is not a model file of framework {framework} "
                f"(expected {'/'.join(_SUFFIXES[framework])})",
                hint="fix framework: or artifacts: in modelport.yaml",
            )
    if len(models) != 1:
        raise ArtifactError(f"framework {framework} takes one model file, got {', '.join(models)}")
    return framework, artifacts


def detect(model_dir: Path, config: ModelConfig) -> tuple[Framework, tuple[str, ...]]:
    """The framework and artifact paths (relative, POSIX, sorted): configured, else detected."""
    if config.framework is not None and config.framework not in FRAMEWORKS:  # pragma: no cover
        raise UnsupportedFramework(f"unknown framework {config.framework!r}")
    try:
        if config.artifacts:
            return _check_configured(model_dir, config)
        return _scan(model_dir, config.framework)
    except OSError as exc:
        raise ArtifactError(f"cannot read {model_dir}: {exc.strerror or exc}") from None


def inspect_model(
    model_dir: Path,
    config: ModelConfig,
    sandbox: Sandbox | None = None,
    *,
    detected: tuple[Framework, tuple[str, ...]] | None = None,
) -> NativeContract:
    """Read the native contract of the model in ``model_dir``; never imports or runs its code here.

    Artifacts that need code to open go to ``sandbox``; without one they are refused. ``detected`` is
    ``detect``'s answer when the caller has it (intake detects once).
    """
    framework, artifacts = detected if detected is not None else detect(model_dir, config)
    suffixes = _SUFFIXES[framework]
    rel = next(a for a in artifacts if Path(a).suffix.lower() in suffixes)
    path = model_dir / rel
    try:
        if framework == "onnx":
            from chalicelib.inspect.onnx_ import inspect_onnx

            return inspect_onnx(path, rel)
        if framework == "sklearn":
            from chalicelib.inspect import sklearn

            chosen = sandbox if sandbox is not None else NoSandbox()
            if path.suffix.lower() in PICKLE_SUFFIXES:
                return sklearn.inspect_pickle(path, rel, config, chosen)
            return sklearn.inspect_skops(path, rel, config, chosen)
        if framework == "xgboost":
            from chalicelib.inspect.xgboost import inspect_xgboost

            return inspect_xgboost(path, rel)
        if framework == "lightgbm":
            from chalicelib.inspect.xgboost import inspect_lightgbm

            return inspect_lightgbm(path, rel)
        from chalicelib.inspect.predictor import inspect_predictor

        return inspect_predictor(path, rel)
    except OSError as exc:
        raise ArtifactError(f"{rel}: cannot read it: {exc.strerror or exc}") from None


def inspect_user_steps(model_dir: Path, config: ModelConfig) -> tuple[UserSignature, ...]:
    """The types of the user steps ``config`` names, from their annotations; never imports them."""
    from chalicelib.inspect.steps import inspect_user_steps as inspect_steps

    return inspect_steps(model_dir, config)


def convert_model(
    model_dir: Path, manifest: ModelConfigFile, *, tolerance: Tolerance | None = None
) -> tuple[Conversion, tuple[ArtifactFile, ...]]:
    """``runtime: onnx``: the scikit-learn model of ``manifest`` converted to ONNX into the model directory
    and proven to answer like the estimator (``ConversionError`` naming the largest difference if not)."""
    from chalicelib.inspect.convert import convert_model as convert

    return convert(model_dir, manifest, tolerance=tolerance)


def restore_converted(model_dir: Path, manifest: ModelConfigFile) -> None:
    """The converted graph of ``manifest`` written again where it is missing (a re-extracted bundle)."""
    from chalicelib.inspect.convert import restore_converted as restore

    restore(model_dir, manifest)
