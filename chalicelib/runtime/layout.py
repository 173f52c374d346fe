"""The model directory inside the image: the manifest's files plus ``model-config.json``.

The image builder calls ``prepare_model_dir`` to stage exactly what the runtime opens - the artifact files,
checked against the digests the manifest recorded, and the user-step files - so a stale or swapped file is
caught when the image is built, not at the first invocation. A converted model's artifact (``runtime: onnx``)
is the graph intake wrote under ``CONVERTED_DIR`` of the model directory; the image has it at its own path,
and not the source artifact it was made from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from chalicelib.core.config_file import CONVERTED_DIR, ModelConfigFile
from chalicelib.core.files import is_safe_relative_path, sha256_file

MODEL_CONFIG = "model-config.json"
MODEL_DIR_ENV = "MODELPORT_MODEL_DIR"
DEFAULT_MODEL_DIR = "/var/task/model"


class LayoutError(ValueError):
    """A file the manifest names is missing, unsafe or not the one it recorded."""


def user_step_files(manifest: ModelConfigFile) -> tuple[str, ...]:
    refs = [*manifest.processing.pre, *manifest.processing.post]
    return tuple(sorted({ref.step.split(":", 1)[0] for ref in refs if ref.is_user_code}))


def _safe(rel: str) -> str:
    if not is_safe_relative_path(rel):
        raise LayoutError(f"{rel!r} is not a relative path inside the model directory")
    return rel


def _copy(src: Path, dest: Path) -> str:
    """Copy one file, returning the sha256 of the bytes written (one read for both)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as fout:
        digest = sha256_file(src, copy_to=fout)
    shutil.copymode(src, dest)
    return digest


def prepare_model_dir(model_src: Path, manifest: ModelConfigFile, dest: Path) -> Path:
    """Copy the manifest's artifact and user-step files from ``model_src`` into ``dest`` and write
    ``dest/model-config.json``; returns ``dest``."""
    root = model_src.resolve()
    expected = {f.path: f.sha256 for f in manifest.artifact.files}
    converted = manifest.conversion is not None
    for rel in sorted({*expected, *user_step_files(manifest)}):
        where = f"{CONVERTED_DIR}/{_safe(rel)}" if converted and rel in expected else _safe(rel)
        src = (model_src / where).resolve()
        if not src.is_relative_to(root):
            raise LayoutError(f"{where} leads outside {model_src}")
        if not src.is_file():
            raise LayoutError(f"{where} is not a file in {model_src}")
        digest = _copy(src, dest / rel)
        if rel in expected and digest != expected[rel]:
            raise LayoutError(f"{rel} changed since the model config file was made (sha256 {digest[:12]}...)")
    (dest / MODEL_CONFIG).write_text(manifest.to_json(), encoding="utf-8")
    return dest
