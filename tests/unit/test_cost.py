"""The price arithmetic against figures worked out by hand from the published rates (core/cost.py)."""

from __future__ import annotations

import pytest

from chalicelib.core.cost import (
    Bill,
    ExecutionBill,
    FunctionRun,
    express_billed_ms,
    express_cost_pp,
    express_memory_mb,
    lambda_billed_ms,
    lambda_cost_pp,
    usd,
)


def test_lambda_bills_the_handler_and_a_cold_init_rounded_up_to_the_millisecond() -> None:
    assert lambda_billed_ms(0.2) == 1
    assert lambda_billed_ms(1.0) == 1
    assert lambda_billed_ms(1.0001) == 2
    assert lambda_billed_ms(0.0) == 1  # a request bills at least 1 ms
    # REPORT: Init Duration 1293.83 ms, Duration 1049.63 ms, Billed Duration 2344 ms (summed, then rounded)
    assert lambda_billed_ms(1049.63, 1293.83) == 2344


@pytest.mark.parametrize(
    ("billed_ms", "memory_mb", "architecture", "pico"),
    [
        # $0.20 / 1M = 200,000 pp; 128 MB x 1 ms = 0.000125 GB-s x $0.0000166667 = 2,083.3375 pp
        (1, 128, "x86_64", 202_083),
        # 1 GB x 0.1 s = 0.1 GB-s: x $0.0000166667 = 1,666,670 pp; x $0.0000133334 = 1,333,340 pp
        (100, 1024, "x86_64", 1_866_670),
        (100, 1024, "arm64", 1_533_340),
        # 3008 MB x 2.344 s = 6.8855 GB-s x $0.0000166667 = 114,758,562.85 pp
        (2344, 3008, "x86_64", 114_958_563),
    ],
)
def test_lambda_cost_is_the_request_plus_gb_seconds_at_the_architectures_rate(
    billed_ms: int, memory_mb: int, architecture: str, pico: int
) -> None:
    assert lambda_cost_pp(billed_ms, memory_mb, architecture) == pico


def test_an_unknown_architecture_has_no_price() -> None:
    with pytest.raises(ValueError, match="riscv"):
        lambda_cost_pp(1, 128, "riscv")


def test_express_bills_100_ms_steps_and_64_mb_chunks() -> None:
    assert express_billed_ms(0.0) == 100
    assert express_billed_ms(100.0) == 100
    assert express_billed_ms(100.01) == 200
    assert express_memory_mb(5_000, 2_000) == 64
    # 50 MB + 50 KB + 400 x 32 KB = 62.85 MB: one chunk; 64 MB of data more: two
    assert express_memory_mb(50 * 1024, 400 * 32 * 1024) == 64
    assert express_memory_mb(0, 64 * 1024 * 1024) == 128
    # $1 / 1M = 1,000,000 pp; 0.1 s x 64 MB = 1/576000 GB-h x $0.06 = 104,166.67 pp
    assert express_cost_pp(100, 64) == 1_104_167
    # 10 s x 64 MB = 0.625 GB-s = 1/5760 GB-h x $0.06 = 10,416,666.67 pp (pricing example 3's unit cost)
    assert express_cost_pp(10_000, 64) == 11_416_667


def test_usd_is_exact_and_plain() -> None:
    assert usd(202_083) == "0.000000202083"
    assert usd(1_866_670 * 1_000_000) == "1.86667"
    assert usd(0) == "0"
    assert usd(10**12) == "1"
    assert "e" not in usd(1)


def test_a_chained_bill_adds_each_function_at_its_memory_and_the_execution() -> None:
    runs = (
        FunctionRun("pre", 0.4, memory_mb=1024),
        FunctionRun("model", 2.6, init_ms=800.2, memory_mb=2048, architecture="arm64"),
        FunctionRun("post", 5.0, memory_mb=1024),
    )
    bill = Bill(runs, ExecutionBill(billed_ms=900))
    assert [r.billed_ms for r in runs] == [1, 803, 5]
    assert bill.billed_ms == 809
    pre = 200_000 + 16_667  # 1 ms of 1 GB: 16,666.7 pp, rounded
    model = 200_000 + 21_413_440  # 1.606 GB-s x $0.0000133334 = 21,413,440.4 pp
    post = 200_000 + 83_334  # 5 ms of 1 GB: 83,333.5 pp, rounded half up
    execution = 1_000_000 + 937_500  # 0.9 s x 64 MB = 0.05625 GB-s = 1/64000 GB-h x $0.06
    assert [r.cost_pp for r in runs] == [pre, model, post]
    assert bill.cost_pp == pre + model + post + execution == 24_050_941
    doc = bill.document()
    assert doc == {
        "billed_ms": 809,
        "usd": usd(bill.cost_pp),
        "pico_usd": bill.cost_pp,
        "execution_billed_ms": 900,
    }
    assert usd(bill.cost_pp * 1_000_000) == "24.050941"  # a million of them
