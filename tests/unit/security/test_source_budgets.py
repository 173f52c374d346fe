"""User source (predictors, user steps) and ONNX protobufs are read under budgets: no crash of the worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_deployments import World, bundle

PREDICTOR = "class P:\n    def setup(self) -> None: ...\n    def predict(self, x: {annotation}) -> int: ...\n"


def failed(tmp_path: Path, files: dict[str, bytes | None]) -> str:
    world = World(tmp_path)
    return world.failed(world.upload(bundle(files)))


def predictor(tmp_path: Path, source: str) -> str:
    return failed(
        tmp_path, {"model.onnx": None, "modelport.yaml": b"name: iris-onnx\n", "predict.py": source.encode()}
    )


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("x = 1\n" * 200_000, "predict.py is larger than 1 MiB"),
        ("x = " + "-" * 100_000 + "1\n", "predict.py: the source is nested too deeply to read (simplify it)"),
        (
            PREDICTOR.format(annotation=" | ".join(["int"] * 50_000)),
            "predict.py: the source is nested too deeply",
        ),
        (
            PREDICTOR.format(annotation="list[" * 40 + "int" + "]" * 40),
            "predict.py: P.predict parameter 'x': type annotation nested over 32 levels deep",
        ),
        (
            PREDICTOR.format(annotation="'" + "-" * 100_000 + "1'"),
            "predict.py: P.predict parameter 'x': unsupported type annotation \"'-----",
        ),
        (
            PREDICTOR.format(annotation="set[" + ", ".join(["int"] * 20_000) + "]"),
            "predict.py: P.predict parameter 'x': unsupported type annotation 'set[int, int,",
        ),
    ],
    ids=["size", "unary", "union", "deep-annotation", "deep-string-annotation", "long-annotation"],
)
def test_hostile_predictor_source(tmp_path: Path, source: str, problem: str) -> None:
    reason = predictor(tmp_path, source)
    assert reason.startswith(problem), reason[:300]
    assert len(reason) < 400


def test_hostile_user_step_source(tmp_path: Path) -> None:
    config = (Path(__file__).parents[3] / "examples" / "iris-onnx" / "modelport.yaml").read_text()
    config = config.replace("pre:\n", "pre:\n    - steps.py:clean\n", 1)
    assert "steps.py:clean" in config
    source = "def clean(value: " + " | ".join(["int"] * 50_000) + "): ...\n"
    reason = failed(tmp_path, {"modelport.yaml": config.encode(), "steps.py": source.encode()})
    assert reason == "steps.py: the source is nested too deeply to read (simplify it)"


def _varint(n: int) -> bytes:
    out = b""
    while n > 0x7F:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def test_a_deeply_nested_onnx_protobuf_is_an_artifact_error(tmp_path: Path) -> None:
    graph = b""
    for _ in range(5000):  # graph.node[0].attribute[0].g = graph, 5000 deep
        graph = _field(1, _field(5, _field(6, graph)))
    model = _varint(1 << 3) + _varint(8) + _field(7, graph)
    assert len(model) < 64 * 1024
    reason = failed(tmp_path, {"model.onnx": model})
    assert reason.startswith("model.onnx is not a valid ONNX model (truncated or corrupt): ")
    assert "MaxDepth" in reason or "recursion" in reason.lower()
    assert len(reason) < 300
