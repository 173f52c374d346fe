"""The `modelport` command as a user runs it: a real process, real example models."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/modelport.yaml"))

pytestmark = pytest.mark.functional


def modelport(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


def test_there_are_examples_of_every_kind() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "iris-onnx",
        "iris-skops",
        "digits-onnx",
        "diabetes-lightgbm",
        "sentiment-predictor",
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_manifest_prints_a_complete_config_file(example: Path) -> None:
    result = modelport("manifest", example)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    schema = json.loads((ROOT / "schemas/model-config.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["name"] == example.name
    assert doc["artifact"]["files"] and doc["protocol"]["request"]["content_types"]
    again = modelport("manifest", example, "--format", "json")
    assert json.loads(again.stdout) == doc


def manifest(example: str) -> dict[str, object]:
    result = modelport("manifest", ROOT / "examples" / example, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_iris_accepts_records_with_the_four_feature_names() -> None:
    for name in ("iris-onnx", "iris-skops"):
        proto = manifest(name)["protocol"]
        assert isinstance(proto, dict)
        record = proto["request"]["json_schema"]["oneOf"][0]["properties"]["records"]["items"]
        assert record["required"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        assert "text/csv" in proto["request"]["content_types"]
        assert proto["response"]["content_types"] == ["application/json", "image/png"]
        labels = proto["response_value"]["data"]["labels"]
        assert labels == ["setosa", "versicolor", "virginica"]


def test_the_image_example_takes_an_image_and_answers_labels_and_scores() -> None:
    proto = manifest("digits-onnx")["protocol"]
    assert isinstance(proto, dict)
    assert proto["request_value"]["kind"] == "image"
    assert {"image/png", "image/jpeg"} <= set(proto["request"]["content_types"])
    item = proto["response"]["json_schema"]["properties"]["predictions"]["items"]["items"]
    assert item["required"] == ["label", "score"]
    assert proto["chain"][0]["produces"] == "float32[1,64]"


def test_the_predictor_contract_comes_from_its_type_hints() -> None:
    proto = manifest("sentiment-predictor")["protocol"]
    assert isinstance(proto, dict)
    assert proto["request"]["json_schema"]["required"] == ["text"]
    assert "text" in proto["request"]["json_schema"]["properties"]


def test_same_directory_gives_byte_identical_output() -> None:
    first = modelport("manifest", ROOT / "examples/digits-onnx").stdout
    assert first == modelport("manifest", ROOT / "examples/digits-onnx").stdout


def test_inspect_and_openapi() -> None:
    shown = modelport("inspect", ROOT / "examples/iris-onnx")
    assert shown.returncode == 0, shown.stderr
    assert "framework: onnx" in shown.stdout and "float32[" in shown.stdout
    doc = json.loads(modelport("openapi", ROOT / "examples/iris-onnx").stdout)
    assert doc["openapi"] == "3.1.0" and "/v1/models/iris-onnx/invoke" in doc["paths"]


# --------------------------------------------------------------------------- bad input


def tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def model_dir(tmp_path: Path, config: str, files: dict[str, bytes]) -> Path:
    (tmp_path / "modelport.yaml").write_text(config)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


BAD = {
    "missing artifact": (
        "name: m\nartifacts: [model.onnx]\n",
        {},
        "artifact 'model.onnx' not found",
    ),
    "corrupt onnx": (
        "name: m\n",
        {"model.onnx": tiny_onnx()[:20]},
        "model.onnx is not a valid ONNX model",
    ),
    "unknown framework": ("name: m\n", {"model.pt": b"\x80\x02"}, "model.pt"),
    "pickle without opt-in": (
        "name: m\n",
        {"model.pkl": pickle.dumps(Boom())},
        "allow_pickle",
    ),
    "config typo": (
        "name: m\nenviroment: {memory_mb: 512}\n",
        {"model.onnx": tiny_onnx()},
        "unknown key 'enviroment': did you mean 'environment'?",
    ),
    "incompatible chain": (
        "name: m\nprocessing: {pre: [{image: {size: [8, 8], mode: L, layout: flat}}]}\n",
        {"model.onnx": tiny_onnx()},
        "pre step image produces float32[1,64] but model input 'x' expects float32[N,4]",
    ),
    "memory out of range": (
        "name: m\nenvironment: {memory_mb: 64}\n",
        {"model.onnx": tiny_onnx()},
        "environment.memory_mb: 64 is too small (at least 128)",
    ),
    "timeout out of range": (
        "name: m\nenvironment: {timeout_s: 1000}\n",
        {"model.onnx": tiny_onnx()},
        "environment.timeout_s: 1000 is too large (at most 900)",
    ),
    "name not a slug": ("name: My_Model\n", {"model.onnx": tiny_onnx()}, "'My_Model' is not a slug"),
    "predictor without hints": (
        "name: m\n",
        {
            "predict.py": b"class Predictor:\n    def setup(self):\n        pass\n"
            b"    def predict(self, text):\n        return 1\n"
        },
        "parameter 'text' has no type hint",
    ),
    "no config": (None, {"model.onnx": b""}, "no modelport.yaml in"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_no_traceback(case: str, tmp_path: Path) -> None:
    config, files, message = BAD[case]
    if config is None:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
    else:
        model_dir(tmp_path, config, files)
    result = modelport("manifest", tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "unpickled!" not in result.stderr + result.stdout


def test_a_missing_directory_is_a_usage_error() -> None:
    result = modelport("manifest", "/nonexistent/dir")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
