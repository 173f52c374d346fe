"""Which file is the model, and of which framework: detection rules and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.config import ModelConfig, parse_config
from chalicelib.core.errors import ArtifactError, UnsupportedFramework
from chalicelib.inspect import detect, inspect_model

XGB_JSON = json.dumps({"learner": {"learner_model_param": {"num_feature": "2"}}, "version": [2]})
LGB_TEXT = "tree\nversion=v4\nmax_feature_idx=1\nobjective=regression\n\nTree=0\n"


def cfg(**kw: Any) -> ModelConfig:
    return parse_config({"name": "m", **kw})


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("name", "text", "framework"),
    [
        ("model.onnx", "x", "onnx"),
        ("model.skops", "x", "sklearn"),
        ("model.joblib", "x", "sklearn"),
        ("model.pkl", "x", "sklearn"),
        ("model.pickle", "x", "sklearn"),
        ("model.ubj", "x", "xgboost"),
        ("booster.json", XGB_JSON, "xgboost"),
        ("model.txt", LGB_TEXT, "lightgbm"),
        ("predict.py", "class P: ...", "python"),
    ],
)
def test_detects_each_kind(tmp_path: Path, name: str, text: str, framework: str) -> None:
    write(tmp_path, {name: text})
    assert detect(tmp_path, cfg()) == (framework, (name,))


def test_ignores_config_readme_and_unrelated_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "modelport.yaml": "name: m\n",
            "README.md": "# hi",
            "labels.json": '{"classes": ["a"]}',
            "broken.json": "{",
            "notes.txt": "not a tree\n",
            "helpers.py": "x = 1",
            ".hidden.onnx": "x",
            "sub/other.onnx": "x",
            "model.onnx": "x",
        },
    )
    assert detect(tmp_path, cfg()) == ("onnx", ("model.onnx",))


def test_no_model_file_lists_what_is_accepted(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": "x", "modelport.yaml": "name: m\n"})
    with pytest.raises(ArtifactError, match=r"no model file found in .*accepted: \.onnx"):
        detect(tmp_path, cfg())


def test_several_candidates_ask_for_artifacts(tmp_path: Path) -> None:
    write(tmp_path, {"a.onnx": "x", "b.skops": "x"})
    with pytest.raises(ArtifactError, match=r"several model files .*: a\.onnx, b\.skops.*artifacts:"):
        detect(tmp_path, cfg())


def test_configured_framework_narrows_the_scan(tmp_path: Path) -> None:
    write(tmp_path, {"predict.py": "x", "weights.onnx": "x"})
    assert detect(tmp_path, cfg(framework="python")) == ("python", ("predict.py",))
    with pytest.raises(ArtifactError, match="no lightgbm model file found"):
        detect(tmp_path, cfg(framework="lightgbm"))


def test_foreign_model_format_is_unsupported(tmp_path: Path) -> None:
    write(tmp_path, {"model.pt": "x", "README.md": "x"})
    with pytest.raises(UnsupportedFramework, match=r"model\.pt: \.pt models are not supported"):
        detect(tmp_path, cfg())


def test_configured_artifact_with_unknown_extension(tmp_path: Path) -> None:
    write(tmp_path, {"model.h5": "x"})
    with pytest.raises(UnsupportedFramework, match=r"model\.h5.*\.h5 file; supported: .*onnx"):
        detect(tmp_path, cfg(artifacts=["model.h5"]))


def test_configured_artifact_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"artifact 'model\.onnx' not found in "):
        detect(tmp_path, cfg(artifacts=["model.onnx"]))


def test_configured_artifact_of_the_wrong_kind(tmp_path: Path) -> None:
    write(tmp_path, {"model.skops": "x"})
    with pytest.raises(ArtifactError, match=r"'model\.skops' is not a model file of framework onnx"):
        detect(tmp_path, cfg(framework="onnx", artifacts=["model.skops"]))


def test_configured_artifacts_mixing_frameworks(tmp_path: Path) -> None:
    write(tmp_path, {"predict.py": "x", "model.onnx": "x"})
    with pytest.raises(ArtifactError, match=r"mix frameworks \(onnx, python\).*framework:"):
        detect(tmp_path, cfg(artifacts=["predict.py", "model.onnx"]))


def test_configured_artifacts_are_sorted_and_may_live_in_subdirs(tmp_path: Path) -> None:
    write(tmp_path, {"predict.py": "x", "weights/w.bin": "x", "nets/model.onnx": "x"})
    config = cfg(framework="python", artifacts=["weights/w.bin", "predict.py"])
    assert detect(tmp_path, config) == ("python", ("predict.py", "weights/w.bin"))
    assert detect(tmp_path, cfg(artifacts=["nets/model.onnx"])) == ("onnx", ("nets/model.onnx",))


def test_python_needs_exactly_one_py_artifact(tmp_path: Path) -> None:
    write(tmp_path, {"w.bin": "x"})
    with pytest.raises(ArtifactError, match=r"exactly one \.py artifact"):
        detect(tmp_path, cfg(framework="python", artifacts=["w.bin"]))


def test_symlink_leaving_the_model_dir_is_refused(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside", {"model.onnx": "x"})
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.onnx").symlink_to(outside / "model.onnx")
    with pytest.raises(ArtifactError, match=r"model\.onnx is a symlink to .* outside "):
        detect(model_dir, cfg())
    with pytest.raises(ArtifactError, match="outside"):
        detect(model_dir, cfg(artifacts=["model.onnx"]))


def test_symlink_inside_the_model_dir_is_fine(tmp_path: Path) -> None:
    write(tmp_path, {"store/real.onnx": "x"})
    (tmp_path / "model.onnx").symlink_to(tmp_path / "store" / "real.onnx")
    assert detect(tmp_path, cfg()) == ("onnx", ("model.onnx",))


def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        inspect_model(tmp_path / "nope", cfg())


def test_importing_the_package_is_cheap() -> None:
    code = (
        "import sys, chalicelib.inspect; "
        "print(sorted(m for m in ('onnx', 'sklearn', 'skops', 'numpy', 'lightgbm') "
        "if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
