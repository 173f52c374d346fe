"""The Open Inference Protocol's binary tensor data extension, both ways.

A request or response is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
tensors, in the header's order, each as many bytes as its ``parameters.binary_data_size`` says: fixed-size
types little-endian and row-major, BYTES as a 4-byte little-endian length before each element. Everything
is checked against the header before anything is unpacked: the header's length, each tensor's size against
its shape and type, and that the blobs add up to the body exactly.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from chalicelib.core.errors import InvalidRequest
from chalicelib.core.jsontext import MAX_DEPTH, JsonTextError, loads, short

HEADER = "Inference-Header-Content-Length"
FIXED: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
_LENGTH = struct.Struct("<I")


def _bad(message: str, pointer: str) -> InvalidRequest:
    return InvalidRequest(message, errors=[{"pointer": pointer, "message": message}])


def decode_request(body: bytes, header_length: str) -> dict[str, Any]:
    """The OIP request a binary body carries, its binary inputs turned into ``data`` lists."""
    if not (header_length.isascii() and header_length.isdigit()) or not 0 < int(header_length) <= len(body):
        raise _bad(f"{HEADER} must be a byte count within the body's {len(body)} bytes", f"/{HEADER}")
    size = int(header_length)
    try:
        request = loads(body[:size])
    except JsonTextError as exc:
        raise _bad(f"the JSON header: {exc.message}", exc.pointer) from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InvalidRequest("an OIP request has inputs: [{name, datatype, shape, data}, ...]")
    offset = size
    for i, tensor in enumerate(request["inputs"]):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        length = parameters.pop("binary_data_size")
        if type(length) is not int or length < 0 or offset + length > len(body):
            raise _bad(f"input {i}: binary_data_size goes past the body", f"/inputs/{i}/parameters")
        tensor["data"] = _unpack(tensor, body[offset : offset + length], i)
        offset += length
    if offset != len(body):
        raise _bad(f"{len(body) - offset} bytes after the last binary input", "/inputs")
    return request


def _count(tensor: dict[str, Any], i: int) -> int:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DEPTH  # before math.prod: a million huge dimensions is a bignum's worth of CPU
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise _bad(
            f"input {i}: shape must be a list of at most {MAX_DEPTH} non-negative integers",
            f"/inputs/{i}/shape",
        )
    return math.prod(shape)


def _unpack(tensor: dict[str, Any], blob: bytes, i: int) -> list[Any]:
    datatype = tensor.get("datatype")
    count = _count(tensor, i)
    if datatype == "BYTES":
        values: list[Any] = []
        at = 0
        while at < len(blob) and len(values) < count:
            if at + 4 > len(blob):
                break
            (n,) = _LENGTH.unpack_from(blob, at)
            if at + 4 + n > len(blob):
                break
            raw = blob[at + 4 : at + 4 + n]
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise _bad(f"input {i}: a BYTES element is not UTF-8", f"/inputs/{i}") from None
            at += 4 + n
        if len(values) != count or at != len(blob):
            raise _bad(f"input {i}: the BYTES data does not hold {count} elements", f"/inputs/{i}")
        return values
    code = FIXED.get(datatype) if isinstance(datatype, str) else None
    if code is None:
        raise _bad(f"input {i}: datatype {short(str(datatype))} has no binary form", f"/inputs/{i}/datatype")
    item = struct.calcsize(code)
    if len(blob) != count * item:
        raise _bad(
            f"input {i}: {len(blob)} bytes, but shape {tensor['shape']} of {datatype} needs {count * item}",
            f"/inputs/{i}/parameters/binary_data_size",
        )
    return list(struct.unpack(f"<{count}{code}", blob))


def select_outputs(request: dict[str, Any], response: dict[str, Any]) -> None:
    """Keep only the outputs the request's ``outputs`` names (all without it); an unknown name is a 400."""
    asked = request.get("outputs")
    if asked is None:
        return
    if not isinstance(asked, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked
    ):
        raise _bad("outputs must be a list of {name, parameters?}", "/outputs")
    names = [o["name"] for o in asked]
    have = {t["name"] for t in response["outputs"]}
    unknown = [n for n in names if n not in have]
    if unknown:
        raise _bad(
            f"unknown output(s): {', '.join(short(n) for n in unknown)}; outputs: {', '.join(sorted(have))}",
            "/outputs",
        )
    response["outputs"] = [t for t in response["outputs"] if t["name"] in set(names)]


def binary_outputs(request: dict[str, Any], names: list[str]) -> set[str]:
    """Which of the response's outputs go binary: all with ``binary_data_output``, else those the request's
    ``outputs`` ask so of."""
    parameters = request.get("parameters")
    everything = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    asked = {
        str(o.get("name"))
        for o in request.get("outputs") or []
        if isinstance(o, dict)
        and isinstance(o.get("parameters"), dict)
        and o["parameters"].get("binary_data")
    }
    return set(names) if everything else asked & set(names)


def encode_response(response: dict[str, Any], binary: set[str]) -> tuple[bytes, int]:
    """(body, header length): the outputs named in ``binary`` moved behind the JSON header."""
    blobs: list[bytes] = []
    for tensor in response["outputs"]:
        if tensor["name"] not in binary:
            continue
        try:
            blob = _pack(tensor["datatype"], tensor["data"])
        except (struct.error, KeyError, TypeError):  # a value the type cannot hold: left in the JSON
            continue
        del tensor["data"]
        tensor["parameters"] = {**tensor.get("parameters", {}), "binary_data_size": len(blob)}
        blobs.append(blob)
    header = json.dumps(response).encode()
    return header + b"".join(blobs), len(header)


def _pack(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in data:
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_LENGTH.pack(len(raw)) + raw)
        return b"".join(parts)
    return struct.pack(f"<{len(data)}{FIXED[datatype]}", *data)
