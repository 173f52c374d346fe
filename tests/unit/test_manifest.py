"""The model config file: deterministic, schema'd, and fingerprinting environments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.core.config import parse_config
from chalicelib.core.config_file import (
    ArtifactFile,
    ModelConfigFile,
    build_config_file,
    config_json_schema,
    manifest_json_schema,
    schema_text,
)
from chalicelib.core.environment import resolve_environment
from chalicelib.core.openapi import openapi_document
from tests.unit.test_chain import IRIS, SKLEARN_IRIS

ROOT = Path(__file__).resolve().parents[2]
FILES = (
    ArtifactFile(path="model.onnx", sha256="a" * 64, size_bytes=1234),
    ArtifactFile(path="extra/vocab.txt", sha256="b" * 64, size_bytes=9),
)
IRIS_CONFIG: dict[str, Any] = {
    "name": "iris",
    "description": "Iris species from four measurements",
    "labels": ["setosa", "versicolor", "virginica"],
    "processing": {
        "pre": [{"tabular": {"features": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}}],
        "post": ["labels", {"bar_chart": {"title": "Iris"}}],
    },
}


def iris_manifest(**overrides: Any) -> ModelConfigFile:
    return build_config_file(parse_config({**IRIS_CONFIG, **overrides}), IRIS, FILES, version=2)


def test_same_inputs_give_byte_identical_files() -> None:
    a, b = (
        iris_manifest(),
        build_config_file(parse_config(IRIS_CONFIG), IRIS, tuple(reversed(FILES)), version=2),
    )
    assert a.to_yaml() == b.to_yaml()
    assert a.to_json() == b.to_json()
    assert a.digest == b.digest


def test_the_file_holds_every_section_and_empty_deployment_slots() -> None:
    data = yaml.safe_load(iris_manifest().to_yaml())
    assert list(data) == [
        "schema_version", "name", "version", "description", "artifact", "native", "environment",
        "processing", "labels", "allow_pickle", "trusted_types", "pipeline", "protocol", "steps",
        "container", "deployment",
    ]  # fmt: skip
    assert data["container"] is None and data["deployment"] is None
    assert data["artifact"]["digest"].startswith("sha256:")
    assert [f["path"] for f in data["artifact"]["files"]] == ["extra/vocab.txt", "model.onnx"]
    assert data["environment"]["fingerprint"].startswith("sha256:")
    assert "onnxruntime==1.32.0" in data["environment"]["packages"]
    assert "matplotlib==3.11.2" in data["environment"]["packages"]  # the bar_chart step's runtime


def test_a_changed_artifact_changes_the_digest_but_not_the_fingerprint() -> None:
    other = build_config_file(
        parse_config(IRIS_CONFIG),
        IRIS,
        (ArtifactFile(path="model.onnx", sha256="c" * 64, size_bytes=1),),
    )
    assert other.artifact.digest != iris_manifest().artifact.digest
    assert other.environment.fingerprint == iris_manifest().environment.fingerprint


def test_models_with_the_same_environment_share_a_fingerprint() -> None:
    a = resolve_environment(parse_config({"name": "a", "environment": {"memory_mb": 256}}), "onnx")
    b = resolve_environment(parse_config({"name": "b", "environment": {"timeout_s": 300}}), "onnx")
    assert a.fingerprint == b.fingerprint
    for change in (
        {"python": "3.12"},
        {"architecture": "arm64"},
        {"packages": ["scipy"]},
        {"base_image": "x/y:1"},
    ):
        c = resolve_environment(parse_config({"name": "c", "environment": change}), "onnx")
        assert c.fingerprint != a.fingerprint, change
    assert resolve_environment(parse_config({"name": "d"}), "sklearn").fingerprint != a.fingerprint


def test_user_packages_override_the_pins() -> None:
    env = resolve_environment(parse_config({"name": "a", "environment": {"packages": ["NumPy<2.3"]}}), "onnx")
    assert "NumPy<2.3" in env.packages and not any(p.startswith("numpy==") for p in env.packages)


def test_the_file_validates_against_its_committed_schema() -> None:
    committed = json.loads((ROOT / "schemas/model-config.schema.json").read_text())
    jsonschema.validate(iris_manifest().to_data(), committed)
    jsonschema.validate(
        build_config_file(
            parse_config({"name": "s", "processing": {"pre": ["tabular"]}}), SKLEARN_IRIS, FILES
        ).to_data(),
        committed,
    )


def test_committed_schemas_have_not_drifted() -> None:
    """Regenerate with `make schemas` after changing core/config_file.py or core/config.py."""
    assert (ROOT / "schemas/model-config.schema.json").read_text() == schema_text(manifest_json_schema())
    assert (ROOT / "schemas/modelport.schema.json").read_text() == schema_text(config_json_schema())


def test_the_file_reads_back_into_the_same_model() -> None:
    m = iris_manifest()
    assert ModelConfigFile.model_validate_json(m.to_json()) == m
    assert ModelConfigFile.model_validate(yaml.safe_load(m.to_yaml())) == m


@settings(max_examples=40, deadline=None)
@given(
    name=st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
    version=st.integers(1, 10_000),
    memory=st.integers(128, 10240),
    description=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=80),
)
def test_any_config_gives_a_stable_file(name: str, version: int, memory: int, description: str) -> None:
    config = parse_config(
        {
            **IRIS_CONFIG,
            "name": name,
            "description": description,
            "environment": {"memory_mb": memory},
        }
    )
    a = build_config_file(config, IRIS, FILES, version=version)
    assert build_config_file(config, IRIS, FILES, version=version).to_yaml() == a.to_yaml()
    assert ModelConfigFile.model_validate(yaml.safe_load(a.to_yaml())) == a


def test_openapi_document_describes_the_invoke_endpoint() -> None:
    doc = openapi_document(iris_manifest())
    assert doc["openapi"] == "3.1.0"
    post = doc["paths"]["/v1/models/iris/invoke"]["post"]
    request = post["requestBody"]["content"]
    assert set(request) == {"application/json", "text/csv"}
    jsonschema.validate(request["application/json"]["example"], request["application/json"]["schema"])
    assert set(post["responses"]["200"]["content"]) == {"application/json", "image/png"}
    assert {"400", "401", "404", "502"} <= set(post["responses"])
    assert "/v2/models/iris/infer" in doc["paths"]
    assert (
        doc["paths"]["/v2/models/iris"]["get"]["responses"]["200"]["content"]["application/json"]["example"][
            "inputs"
        ][0]["name"]
        == "sepal_length"
    )
