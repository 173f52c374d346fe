"""Open Inference Protocol v2 <-> the model's own protocol, column-wise like the metadata we publish.

An OIP request is turned into the model's public JSON request (then validated and invoked like any
other), and the JSON response back into OIP output tensors, so the v2 endpoints add no second code path
to the model's function.
"""

from __future__ import annotations

import json
import math
from typing import Any

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.errors import InvalidRequest
from chalicelib.core.jsontext import MAX_DEPTH, short
from chalicelib.core.protocol import (
    Boxes,
    EncodedImage,
    Figure,
    Json,
    Labels,
    Records,
    Tensors,
    TensorSpec,
    Value,
)


def _reshape(flat: list[Any], shape: list[int], name: str) -> Any:
    if 0 in shape:
        raise InvalidRequest(
            f"input {name!r}: shape {shape} has a zero dimension, so no values to run",
            errors=[{"pointer": f"/inputs/{name}/shape", "message": "a zero dimension"}],
        )
    if math.prod(shape) != len(flat):
        raise InvalidRequest(
            f"input {name!r}: shape {shape} holds {math.prod(shape)} values but data has {len(flat)}",
            errors=[{"pointer": f"/inputs/{name}/data", "message": "size does not match shape"}],
        )
    value: Any = flat
    for dim in reversed(shape[1:]):
        value = [value[i : i + dim] for i in range(0, len(value), dim)]
    return value


def _flatten(value: Any) -> tuple[list[Any], list[int]]:
    if not isinstance(value, list):
        return [value], []
    if not value:
        return [], [0]
    parts = [_flatten(v) for v in value]
    return [x for flat, _ in parts for x in flat], [len(value), *parts[0][1]]


def _inputs_by_name(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The request's tensors by name, each checked for what OIP v2 requires of an input: a string name
    and datatype, a shape of non-negative integers, a data list."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(t, dict) for t in inputs):
        raise InvalidRequest("an OIP request has inputs: [{name, datatype, shape, data}, ...]")
    tensors: dict[str, dict[str, Any]] = {}
    for i, tensor in enumerate(inputs):
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidRequest(
                f"input {i} needs a name (a string)",
                errors=[{"pointer": f"/inputs/{i}/name", "message": "not a string"}],
            )
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or not all(type(d) is int and d >= 0 for d in shape)
            or len(shape) > MAX_DEPTH
        ):
            raise InvalidRequest(
                f"input {short(name)}: shape must be a list of at most {MAX_DEPTH} non-negative integers",
                errors=[{"pointer": f"/inputs/{i}/shape", "message": "not a list of non-negative integers"}],
            )
        if "datatype" in tensor and not isinstance(tensor["datatype"], str):
            raise InvalidRequest(
                f"input {short(name)}: datatype must be a string such as FP32",
                errors=[{"pointer": f"/inputs/{i}/datatype", "message": "not a string"}],
            )
        tensors[name] = tensor
    return tensors


def request_id(request: dict[str, Any]) -> str | None:
    """The request's ``id``, echoed in the response: a string when present (OIP v2)."""
    value = request.get("id")
    if value is not None and not isinstance(value, str):
        raise InvalidRequest("id must be a string", errors=[{"pointer": "/id", "message": "not a string"}])
    return value


def _data(tensor: dict[str, Any]) -> list[Any]:
    data = tensor.get("data")
    if not isinstance(data, list):
        raise InvalidRequest(f"input {short(tensor['name'])} needs a data list")
    flat, _ = _flatten(data)  # OIP allows nested or flat data
    return flat


def to_public_request(manifest: ModelConfigFile, request: dict[str, Any]) -> dict[str, Any]:
    """An OIP v2 inference request as the model's JSON request."""
    value = manifest.protocol.request_value
    tensors = _inputs_by_name(request)
    expected = [t.name for t in manifest.protocol.oip.inputs]
    missing = [n for n in expected if n not in tensors]
    if isinstance(value, Json):
        required = set(value.json_schema.get("required", []))
        missing = [n for n in missing if n in required]
    if missing:
        raise InvalidRequest(
            "missing input tensor(s): " + ", ".join(missing),
            errors=[{"pointer": f"/inputs/{n}", "message": "missing"} for n in missing],
        )
    if isinstance(value, Tensors):
        return {
            "inputs": {
                t.name: _reshape(_data(tensors[t.name]), tensors[t.name]["shape"], t.name)
                for t in value.tensors
            }
        }
    if isinstance(value, Records):
        columns = {f.name: _data(tensors[f.name]) for f in value.features}
        lengths = {len(c) for c in columns.values()}
        if len(lengths) != 1:
            raise InvalidRequest("every feature tensor needs the same number of values")
        rows = lengths.pop()
        return {"records": [{name: col[i] for name, col in columns.items()} for i in range(rows)]}
    if isinstance(value, EncodedImage):
        data = _data(tensors["image"])
        if len(data) != 1 or not isinstance(data[0], str):
            raise InvalidRequest("input 'image' takes one base64 string")
        return {"image": data[0]}
    assert isinstance(value, Json)
    doc: dict[str, Any] = {}
    props = value.json_schema.get("properties", {})
    for name, tensor in tensors.items():
        if name not in props:
            raise InvalidRequest(f"unknown input tensor {name!r}", hint="inputs: " + ", ".join(props))
        data = _data(tensor)
        doc[name] = data if props[name].get("type") == "array" else (data[0] if data else None)
    return doc


def to_oip_response(
    manifest: ModelConfigFile, body: dict[str, Any], request_id: str | None
) -> dict[str, Any]:
    """The model's JSON response as an OIP v2 inference response."""
    outputs = _outputs(manifest.protocol.response_value, body)
    response: dict[str, Any] = {
        "model_name": manifest.name,
        "model_version": str(manifest.version),
        "outputs": outputs,
    }
    if request_id is not None:
        response["id"] = request_id
    return response


def _tensor(name: str, datatype: str, value: Any, **parameters: str) -> dict[str, Any]:
    flat, shape = _flatten(value)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape, "data": flat}
    if parameters:
        tensor["parameters"] = parameters
    return tensor


def _output_tensor(spec: TensorSpec, data: Any) -> dict[str, Any]:
    """A map of known keys (a ZipMap's scores) goes dense, its columns in ``parameters.keys``; another
    map one JSON document per row; a tensor as it is (``core.protocol.oip_tensors`` says the same)."""
    m = spec.map_of
    if m is None:
        return _tensor(spec.name, spec.datatype or "BYTES", data)
    rows = data if m.sequence else [data]
    if m.keys is not None and spec.scores_view() is not None:
        keys = json.dumps(list(m.keys), ensure_ascii=False)
        dense = [[row.get(k) for k in m.keys] for row in rows if isinstance(row, dict)]
        return _tensor(spec.name, m.value, dense if m.sequence else dense[0], keys=keys)
    documents = [json.dumps(row, ensure_ascii=False) for row in rows]
    return _tensor(spec.name, "BYTES", documents, content_type="application/json")


def _outputs(value: Value, body: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(value, Tensors):
        by_name = {t.name: t for t in value.tensors}
        return [
            _output_tensor(by_name[name], data)
            for name, data in body.get("outputs", {}).items()
            if name in by_name
        ]
    if isinstance(value, Labels):
        rows = body.get("predictions", [])
        return [
            _tensor("label", "BYTES", [[p["label"] for p in row] for row in rows]),
            _tensor("score", "FP32", [[p["score"] for p in row] for row in rows]),
        ]
    if isinstance(value, Boxes):  # one JSON list of detections per image
        rows = body.get("detections", [])
        return [
            _tensor("detections", "BYTES", [json.dumps(row) for row in rows], content_type="application/json")
        ]
    if isinstance(value, Figure):
        figure = body.get("figure", {})
        return [
            *_outputs(value.data, body),
            _tensor("figure", "BYTES", [figure.get("data", "")], content_type=value.media_type),
        ]
    assert isinstance(value, Json)
    output = body.get("output")
    if isinstance(output, dict) and value.json_schema.get("type") == "object":
        tensors = []
        for name, item in output.items():
            if isinstance(item, bool):
                tensors.append(_tensor(name, "BOOL", [item]))
            elif isinstance(item, int):
                tensors.append(_tensor(name, "INT64", [item]))
            elif isinstance(item, float):
                tensors.append(_tensor(name, "FP64", [item]))
            elif isinstance(item, str):
                tensors.append(_tensor(name, "BYTES", [item]))
            elif isinstance(item, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in item
            ):
                tensors.append(_tensor(name, "FP64", item))
            else:
                tensors.append(_tensor(name, "BYTES", [json.dumps(item)], content_type="application/json"))
        return tensors
    return [_tensor("output", "BYTES", [json.dumps(output)], content_type="application/json")]
