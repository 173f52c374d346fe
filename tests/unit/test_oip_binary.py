"""The binary tensor data extension's codec: round trips, and what a hostile body gets."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from chalicelib.core.errors import InvalidRequest
from chalicelib.services.oip_binary import (
    binary_outputs,
    decode_request,
    encode_response,
    select_outputs,
)


def body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), str(len(text))


def fp32(name: str, values: list[float]) -> tuple[dict[str, Any], bytes]:
    blob = struct.pack(f"<{len(values)}f", *values)
    tensor = {
        "name": name,
        "datatype": "FP32",
        "shape": [len(values)],
        "parameters": {"binary_data_size": len(blob)},
    }
    return tensor, blob


def strings(name: str, values: list[bytes]) -> tuple[dict[str, Any], bytes]:
    blob = b"".join(struct.pack("<I", len(v)) + v for v in values)
    tensor = {
        "name": name,
        "datatype": "BYTES",
        "shape": [len(values)],
        "parameters": {"binary_data_size": len(blob)},
    }
    return tensor, blob


def test_binary_inputs_become_data_lists_in_order() -> None:
    a, blob_a = fp32("a", [1.5, -2.0])
    b, blob_b = strings("b", [b"hello", b"", "\u00e9".encode()])
    c = {"name": "c", "datatype": "INT64", "shape": [1], "data": [7]}
    raw, length = body({"id": "r1", "inputs": [a, c, b]}, blob_a, blob_b)
    request = decode_request(raw, length)
    assert [t["data"] for t in request["inputs"]] == [[1.5, -2.0], [7], ["hello", "", "\u00e9"]]
    assert request["inputs"][0]["parameters"] == {} and request["id"] == "r1"


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda raw, n: (raw, "0"), "byte count"),
        (lambda raw, n: (raw, str(len(raw) + 1)), "byte count"),
        (lambda raw, n: (raw, "-3"), "byte count"),
        (lambda raw, n: (raw + b"extra", n), "after the last binary input"),
        (lambda raw, n: (raw[:-2], n), "goes past the body"),
        (lambda raw, n: (b"{not json" + raw[int(n) :], str(len(b"{not json"))), "the JSON header"),
    ],
)
def test_a_body_that_does_not_add_up_is_a_400(mangle: Any, message: str) -> None:
    a, blob = fp32("a", [1.0, 2.0])
    raw, length = mangle(*body({"inputs": [a]}, blob))
    with pytest.raises(InvalidRequest, match=message):
        decode_request(raw, length)


def test_sizes_are_checked_against_shape_and_type_before_unpacking() -> None:
    a, blob = fp32("a", [1.0, 2.0])
    a["shape"] = [10**30]  # a shape that would be a huge allocation: refused by size alone
    with pytest.raises(InvalidRequest, match="needs"):
        decode_request(*body({"inputs": [a]}, blob))
    b, blob_b = strings("b", [b"x", b"y"])
    b["shape"] = [3]
    with pytest.raises(InvalidRequest, match="does not hold 3 elements"):
        decode_request(*body({"inputs": [b]}, blob_b))
    odd = {"name": "o", "datatype": "FP8", "shape": [1], "parameters": {"binary_data_size": 1}}
    with pytest.raises(InvalidRequest, match="has no binary form"):
        decode_request(*body({"inputs": [odd]}, b"\0"))
    bad_utf8 = {"name": "u", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}}
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        decode_request(*body({"inputs": [bad_utf8]}, struct.pack("<I", 1) + b"\xff"))


def response() -> dict[str, Any]:
    return {
        "model_name": "m",
        "outputs": [
            {"name": "score", "datatype": "FP32", "shape": [2], "data": [0.25, 0.75]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "bb"]},
        ],
    }


def test_outputs_go_binary_as_asked_and_come_back_exactly() -> None:
    answer = response()
    names = [t["name"] for t in answer["outputs"]]
    assert binary_outputs({"parameters": {"binary_data_output": True}}, names) == {"score", "label"}
    asked = {"outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "score"}]}
    assert binary_outputs(asked, names) == {"label"}
    raw, n = encode_response(answer, {"score", "label"})
    header = json.loads(raw[:n])
    score, label = header["outputs"]
    assert "data" not in score and score["parameters"]["binary_data_size"] == 8
    assert struct.unpack("<2f", raw[n : n + 8]) == (0.25, 0.75)
    assert raw[n + 8 :] == struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bb"
    assert len(raw) == n + 8 + label["parameters"]["binary_data_size"]


def test_requested_outputs_are_kept_in_the_responses_order_and_unknown_ones_refused() -> None:
    answer = response()
    select_outputs({"outputs": [{"name": "label"}]}, answer)
    assert [t["name"] for t in answer["outputs"]] == ["label"]
    with pytest.raises(InvalidRequest, match="unknown output"):
        select_outputs({"outputs": [{"name": "nope"}]}, response())
    with pytest.raises(InvalidRequest, match="outputs must be a list"):
        select_outputs({"outputs": "score"}, response())
