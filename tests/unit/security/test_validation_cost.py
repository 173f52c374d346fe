"""Validation cost is bounded (issue 10): an invalid invoke body costs about what a valid one of its size
does. Measured as memory (deterministic, unlike time) and as the problems reported, through
``RequestValidator``, the check the API runs before any function."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.core.errors import InvalidRequest
from chalicelib.services.intake import config_file_for_dir
from chalicelib.services.invoke import MAX_PROBLEMS, RequestValidator
from tests.support import ROOT

RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
SIZE = 1_000_000


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(config_file_for_dir(ROOT / "examples/iris-onnx"))


def _body(make: Callable[[int], Any], key: str = "records") -> bytes:
    one = len(json.dumps(make(0))) + 2
    return json.dumps({key: [make(i) for i in range(SIZE // one)]}).encode()


INVALID = {
    "every value a string": lambda: _body(lambda i: dict.fromkeys(RECORD, "x")),
    "every record empty": lambda: _body(lambda i: {}),
    "every record with an unknown key": lambda: _body(lambda i: {**RECORD, "colour": 1}),
    "every value over float32": lambda: _body(lambda i: dict.fromkeys(RECORD, 1e39)),
    "every row too short": lambda: _body(lambda i: [1.0, 2.0], "rows"),
    "records and rows": lambda: json.dumps({"records": [RECORD] * 5000, "rows": [[1.0] * 4] * 5000}).encode(),
}


def _peak(validator: RequestValidator, body: bytes) -> tuple[int, list[dict[str, str]]]:
    tracemalloc.start()
    try:
        try:
            validator.validate("application/json", body)
            problems: list[dict[str, str]] = []
        except InvalidRequest as exc:
            problems = exc.errors
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, problems


@pytest.mark.slow  # tracemalloc over 1 MB documents: seconds per case
@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_1_mb_body_costs_about_what_a_valid_one_does(
    validator: RequestValidator, case: str
) -> None:
    valid_peak, none = _peak(validator, _body(lambda i: RECORD))
    assert none == []
    peak, problems = _peak(validator, INVALID[case]())
    assert 1 <= len(problems) <= MAX_PROBLEMS
    assert all(len(p["message"]) <= 200 and len(p["pointer"]) < 200 for p in problems)
    assert peak < 3 * valid_peak, (
        f"{case}: {peak / 1e6:.0f} MB against {valid_peak / 1e6:.0f} MB for a valid body"
    )


def test_problems_stop_at_the_cap_in_document_order(validator: RequestValidator) -> None:
    doc = {"records": [dict.fromkeys(RECORD, "x")] * 10_000}
    problems = validator.problems(doc)
    assert len(problems) == MAX_PROBLEMS
    assert problems[0] == {"pointer": "/records/0/petal_length", "message": "'x' is not of type 'number'"}
    assert {p["pointer"].split("/")[2] for p in problems} <= {"0", "1", "2", "3", "4"}


def test_a_long_value_is_not_echoed_in_messages(validator: RequestValidator) -> None:
    with pytest.raises(InvalidRequest) as err:
        validator.validate("application/json", json.dumps({"records": "x" * 500_000}).encode())
    assert len(err.value.message) < 400
    assert all(len(p["message"]) <= 200 for p in err.value.errors)


def test_unique_items_is_linear_for_unsortable_items() -> None:
    """jsonschema compares items pairwise when they cannot be sorted: 50,000 mixed items would be 10^9
    comparisons; the validator's own uniqueItems hashes them."""
    from chalicelib.services.invoke import SchemaValidator

    schema = {"type": "array", "uniqueItems": True}
    items: list[Any] = [[i] if i % 2 else {"k": i} for i in range(50_000)]
    assert list(SchemaValidator(schema).iter_errors(items)) == []
    errors = list(SchemaValidator(schema).iter_errors([*items, {"k": 0}]))
    assert [e.message for e in errors] == ["has non-unique elements"]
    assert list(SchemaValidator(schema).iter_errors([1, True])) == []  # true is not 1 in JSON
    assert len(list(SchemaValidator(schema).iter_errors([1, 1.0]))) == 1
