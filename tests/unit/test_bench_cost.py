"""bench/cost.py's arithmetic and its section of RESULTS.md (the script itself deploys through the local
stack and is run by hand)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from chalicelib.core.cost import Bill, ExecutionBill, FunctionRun
from tests.support import ROOT


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cost", ROOT / "bench" / "cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_cost"] = module  # dataclasses look their module up
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)  # it puts the repository and bench/ first on sys.path
    finally:
        sys.path[:] = saved
    return module


def fused(ms: float, init_ms: float = 0.0) -> Bill:
    return Bill((FunctionRun("fused", ms, init_ms, memory_mb=1024),))


def test_a_million_calls_cost_the_mean_call_times_a_million(bench: ModuleType) -> None:
    # 1 ms of 1 GB: 200,000 + 16,666.7 pp; 3 ms: 200,000 + 50,000.1 pp -> 216,667 and 250,000
    assert bench.per_million_pp([fused(1.0), fused(2.2)]) == (216_667 + 250_000) * 1_000_000 // 2
    assert bench.dollars(bench.per_million_pp([fused(1.0)])) == "$0.2167"
    with pytest.raises(ValueError, match="no calls"):
        bench.per_million_pp([])


def test_cold_calls_are_blended_in_at_their_share(bench: ModuleType) -> None:
    cold = fused(1.0, init_ms=999.0)  # 1000 ms of 1 GB: 200,000 + 16,666,700 pp
    warm = [fused(1.0)]
    blended = bench.blended_pp(warm, cold, 0.01)
    assert blended == round(216_667 * 1_000_000 * 0.99 + 16_866_700 * 1_000_000 * 0.01)
    assert bench.blended_pp(warm, cold, 0.0) == bench.per_million_pp(warm)


def test_the_section_has_a_row_per_example_and_mode_between_its_markers(bench: ModuleType) -> None:
    chain = Bill(
        (FunctionRun("pre", 0.5), FunctionRun("model", 1.5), FunctionRun("post", 4.0)), ExecutionBill(100)
    )
    rows = {
        "iris-onnx": {
            "fused": bench.Measured(cold=fused(3.0, 700.0), warm=[fused(3.0)] * 3),
            "chained": bench.Measured(cold=chain, warm=[chain] * 3),
        }
    }
    text = bench.section(rows, {"iris-onnx": "1024 MB x86_64"}, calls=3, cold_share=0.01)
    lines = text.splitlines()
    assert lines[0] == "<!-- cost:begin -->" and lines[-1] == "<!-- cost:end -->"
    fused_row, chained_row = (line for line in lines if line.startswith("| iris-onnx"))
    assert "| fused | 3 | 703 | $0.2500 |" in fused_row
    assert "| chained | 7 |" in chained_row and "$1.8208" in chained_row  # 3 requests + Express
