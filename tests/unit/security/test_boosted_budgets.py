"""Boosted-tree files are parsed with budgets proportional to their size, before anything is allocated."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from chalicelib.core.config import ModelConfig
from chalicelib.core.errors import ArtifactError
from chalicelib.inspect import detect, inspect_model
from tests.unit.test_deployments import World, bundle

CONFIG = b"name: iris-onnx\n"


def ubj_bomb() -> bytes:
    """~600 bytes: 65 typed containers of nulls, each claiming a million zero-byte elements."""
    claim = b"[$Z#l" + struct.pack(">i", 1_000_000)
    return b"{U\x07learner[" + claim * 65 + b"]}"


def refused(tmp_path: Path, files: dict[str, bytes | None]) -> tuple[str, float, int]:
    """Deploy the iris bundle with ``files`` instead of its model; (reason, seconds, peak traced bytes)."""
    world = World(tmp_path)
    event = world.upload(bundle({"model.onnx": None, "modelport.yaml": CONFIG, **files}))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        reason = world.failed(event)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return reason, elapsed, peak


def test_the_600_byte_ubjson_bomb_is_refused_at_once(tmp_path: Path) -> None:
    data = ubj_bomb()
    assert len(data) < 620
    reason, elapsed, peak = refused(tmp_path, {"model.ubj": data})
    assert reason.startswith("model.ubj exceeds the parsing budget of an XGBoost UBJSON model: ")
    assert "exceeds the" in reason and "bytes left" in reason
    assert elapsed < 1.0
    assert peak < 64 * 1024 * 1024  # 548 MB before


def test_a_ubjson_document_over_its_element_budget(tmp_path: Path) -> None:
    # Every container claims no more than remains, but together they claim far more than the file holds.
    n = 400
    claim = b"[$Z#I" + struct.pack(">h", n)
    data = b"{U\x07learner[" + claim * n + b"]}"
    reason, _, _ = refused(tmp_path, {"model.ubj": data})
    assert "exceeds the parsing budget" in reason
    assert f"more than {2 * len(data) + 64} elements (2 per byte of the file)" in reason


def test_ubjson_nesting_is_bounded(tmp_path: Path) -> None:
    reason, _, _ = refused(tmp_path, {"model.ubj": b"[" * 10_000 + b"]" * 10_000})
    assert reason.startswith("model.ubj exceeds the parsing budget")
    assert "nested more than 64 levels deep" in reason


def test_a_json_of_empty_arrays_is_refused_before_parsing(tmp_path: Path) -> None:
    filler = ",".join(["[]"] * 200_000)
    data = ('{"learner": {"learner_model_param": {"num_feature": "4"}}, "x": [' + filler + "]}").encode()
    reason, _, peak = refused(tmp_path, {"model.json": data})
    assert reason.startswith("model.json exceeds the parsing budget of an XGBoost JSON model: ")
    assert "arrays/objects exceed the budget" in reason
    assert peak < 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_class", "1000000000"), ("num_feature", "1e9"), ("num_target", "99999999")],
)
def test_xgboost_counts_beyond_the_file_are_refused(tmp_path: Path, field: str, value: str) -> None:
    param = {"num_feature": "4", "num_class": "3", field: value}
    doc = {"learner": {"learner_model_param": param, "objective": {"name": "multi:softprob"}}}
    reason, elapsed, _ = refused(tmp_path, {"model.json": json.dumps(doc).encode()})
    assert f"model.json: {field}={int(float(value))} exceeds the file's budget of one per byte" in reason
    assert elapsed < 1.0


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("num_class=1000000000", "num_class=1000000000 exceeds the file's budget of one per byte"),
        ("max_feature_idx=2000000000", "max_feature_idx=2000000000 exceeds the file's budget"),
        ("num_class=" + "9" * 5000, "num_class is '99999"),
    ],
)
def test_lightgbm_absurd_counts(tmp_path: Path, line: str, problem: str) -> None:
    text = f"tree\nversion=v4\n{line}\nmax_feature_idx=3\nobjective=multiclass num_class:3\n\nTree=0\n"
    text = text.replace("max_feature_idx=3\n", "") if line.startswith("max_feature_idx") else text
    reason, elapsed, _ = refused(tmp_path, {"model.txt": text.encode()})
    assert reason.startswith("model.txt: ") and problem in reason
    assert len(reason) < 300
    assert elapsed < 1.0


def test_a_lightgbm_header_line_over_its_budget(tmp_path: Path) -> None:
    text = b"tree\nversion=v4\nfeature_names=" + b"f " * (9 * 1024 * 1024) + b"\nmax_feature_idx=3\n"
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.txt").write_bytes(text)
    with pytest.raises(ArtifactError, match="a header line exceeds the parsing budget of 16 MiB"):
        inspect_model(model, ModelConfig(name="m"))


def test_sniffing_a_json_file_does_not_parse_it(tmp_path: Path) -> None:
    """Beside a model, a 30 MB data file and a deeply nested one cost a 4 KiB read each, not a parse."""
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "data.json").write_bytes(b"[" + b"[]," * 10_000_000 + b"[]]")
    (tmp_path / "deep.json").write_bytes(b"[" * 200_000)
    tracemalloc.start()
    try:
        assert detect(tmp_path, ModelConfig(name="m")) == ("onnx", ("model.onnx",))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # parsing data.json took ~1 GB; deep.json raised RecursionError
