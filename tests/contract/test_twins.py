"""The image-builder and function-manager twins: deterministic, observable, and able to fail on demand.

The deployment plan runs on them until the docker builder and the Lambda function manager land, so their
answers must look like the real ones (names, ARNs, digests) and a test must be able to make a stage fail.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from chalicelib.core.errors import ArtifactError
from chalicelib.memory.stores import MemoryFunctionManager, MemoryImageBuilder
from tests.unit.test_manifest import iris_manifest


def test_the_image_builder_names_images_by_fingerprint_and_version(tmp_path: Path) -> None:
    manifest = iris_manifest()
    lines: list[str] = []
    builder = MemoryImageBuilder(lambda: "2026-01-01T00:00:00.000Z")
    built = builder.build(manifest, tmp_path, lines.append)
    fingerprint = manifest.environment.fingerprint.removeprefix("sha256:")
    assert built.environment_image == f"memory/env:{fingerprint[:12]}"
    assert built.image_uri == "memory/iris:v2"
    expected = hashlib.sha256((manifest.artifact.digest + manifest.environment.fingerprint).encode())
    assert built.image_digest == "sha256:" + expected.hexdigest()
    assert built.size_bytes == 1234 + 9
    assert builder.build(manifest, tmp_path, lines.append) == built
    assert builder.calls == [manifest, manifest]
    assert len(lines) >= 4 and all(lines)


def test_the_function_manager_deploys_one_fused_function() -> None:
    manifest = iris_manifest()
    manager = MemoryFunctionManager()
    deployed = manager.deploy(manifest, lambda line: None)
    assert deployed.mode == "fused"
    (function,) = deployed.functions
    assert function.role == "fused"
    assert function.function_name == "modelport-iris"
    assert function.function_arn == "arn:aws:lambda:us-east-1:000000000000:function:modelport-iris"
    assert function.version == "2"
    assert manager.calls == [manifest]


def test_both_twins_fail_on_demand(tmp_path: Path) -> None:
    manifest = iris_manifest()
    builder = MemoryImageBuilder(lambda: "t", fail_with=ArtifactError("no space left"))
    manager = MemoryFunctionManager(fail_with=ArtifactError("throttled"))
    with pytest.raises(ArtifactError, match="no space"):
        builder.build(manifest, tmp_path, lambda line: None)
    with pytest.raises(ArtifactError, match="throttled"):
        manager.deploy(manifest, lambda line: None)
    assert builder.calls == [manifest]
    assert manager.calls == [manifest]
