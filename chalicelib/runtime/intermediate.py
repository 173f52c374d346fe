"""The intermediate document: what one stage of a chained pipeline hands the next (docs/pipelines.md).

A chained model runs ``pre``, ``model`` and ``post`` as separate functions; between them the value in
flight (the model's inputs, or its outputs) and what post steps need of the request (the ``StepCall``)
travel as JSON through Step Functions. The encoding is lossless for what the runtime passes: numeric
arrays keep their dtype, shape and bytes (little-endian, base64), numpy scalars stay numpy scalars,
tuples stay tuples, dicts with non-string keys (ONNX ZipMap) keep their keys. So ``post`` computes
exactly what the fused function computes, byte for byte.

Tags are one-key objects whose key starts with ``$``; a plain dict that has such a key is wrapped in
``$map`` so it is never mistaken for a tag.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from chalicelib.runtime.steps.base import Geometry, StepCall

KIND = "modelport.intermediate/v1"
"""The ``kind`` of every intermediate document; a stage refuses any other input."""

_NUMERIC = "biufc"  # numpy dtype kinds carried as raw bytes


class IntermediateError(ValueError):
    """A document is not the intermediate this stage takes (a chain wired wrongly), or a value cannot
    cross stages (user code returned something the encoding does not carry)."""


# --------------------------------------------------------------------------- values


def _tensor(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    kind = array.dtype.kind
    shape = list(array.shape)
    if kind in _NUMERIC:
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        data = base64.b64encode(little.tobytes()).decode("ascii")
        return {"dtype": array.dtype.name, "shape": shape, "data": data}
    if kind in "US":
        return {"dtype": array.dtype.str.lstrip("<>|="), "shape": shape, "values": array.reshape(-1).tolist()}
    if kind == "O":
        return {"dtype": "object", "shape": shape, "values": [encode_value(v) for v in array.reshape(-1)]}
    raise IntermediateError(f"an array of dtype {array.dtype} cannot cross stages")


def _array(doc: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    dtype, shape = str(doc["dtype"]), tuple(int(n) for n in doc["shape"])
    if "data" in doc:
        little = np.dtype(dtype).newbyteorder("<")
        raw = bytearray(base64.b64decode(doc["data"], validate=True))  # writable, as a fresh array is
        return np.frombuffer(raw, dtype=little).astype(np.dtype(dtype), copy=False).reshape(shape)
    if dtype == "object":
        out = np.empty(len(doc["values"]), dtype=object)
        for i, v in enumerate(doc["values"]):
            out[i] = decode_value(v)
        return out.reshape(shape)
    return np.asarray(doc["values"], dtype=np.dtype(dtype)).reshape(shape)


def encode_value(value: Any) -> Any:
    """``value`` as JSON data that ``decode_value`` turns back into an equal value of the same types."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.ndarray):
        return {"$tensor": _tensor(value)}
    if isinstance(value, np.generic):
        return {"$scalar": _tensor(np.asarray(value))}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {"$tuple": [encode_value(v) for v in value]}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            items = {k: encode_value(v) for k, v in value.items()}
            return {"$map": items} if any(k.startswith("$") for k in value) else items
        return {"$pairs": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    raise IntermediateError(f"a {type(value).__name__} cannot cross stages")


def decode_value(doc: Any) -> Any:
    """The value ``encode_value`` encoded."""
    if isinstance(doc, list):
        return [decode_value(v) for v in doc]
    if not isinstance(doc, dict):
        return doc
    if len(doc) == 1:
        ((tag, body),) = doc.items()
        if tag == "$tensor":
            return _array(body)
        if tag == "$scalar":
            return _array(body)[()]
        if tag == "$float":
            return float(body)
        if tag == "$bytes":
            return base64.b64decode(body, validate=True)
        if tag == "$tuple":
            return tuple(decode_value(v) for v in body)
        if tag == "$map":
            return {k: decode_value(v) for k, v in body.items()}
        if tag == "$pairs":
            return {decode_value(k): decode_value(v) for k, v in body}
        if tag.startswith("$"):
            raise IntermediateError(f"unknown tag {tag!r} in an intermediate document")
    return {k: decode_value(v) for k, v in doc.items()}


# --------------------------------------------------------------------------- the request's state


def encode_invocation(inv: StepCall, *, image: bool) -> dict[str, Any]:
    """What post steps need of the request. The image (only when ``image``: an overlay draws on it)
    travels as an RGB PNG: the overlay converts to RGB first, so the pixels it draws on are the same."""
    doc: dict[str, Any] = {}
    if inv.table is not None:
        features, rows = inv.table
        doc["table"] = {"features": list(features), "rows": _tensor(rows)}
    if image and inv.image is not None:
        buffer = io.BytesIO()
        inv.image.convert("RGB").save(buffer, format="PNG", compress_level=1)
        doc["image_png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    if inv.geometry is not None:
        g = inv.geometry
        doc["geometry"] = {name: getattr(g, name) for name in g.__dataclass_fields__}
    return doc


def decode_invocation(doc: Mapping[str, Any]) -> StepCall:
    inv = StepCall()
    if "table" in doc:
        table = doc["table"]
        inv.table = (tuple(table["features"]), _array(table["rows"]))
    if "image_png" in doc:
        from PIL import Image

        inv.image = Image.open(io.BytesIO(base64.b64decode(doc["image_png"], validate=True)))
        inv.image.load()
    if "geometry" in doc:
        inv.geometry = Geometry(**doc["geometry"])
    return inv


def document(
    next_role: str,
    value: Any,
    invocation: Mapping[str, Any],
    accept: str,
    timings: Mapping[str, float],
    *,
    spill: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The intermediate document. ``status`` is 200 so the state machine's Choice goes on to the next
    stage (an answer of 400 or more ends the chain); ``spill`` (the request's) travels along."""
    doc = {
        "status": 200,
        "kind": KIND,
        "next": next_role,
        "accept": accept,
        "value": encode_value(value),
        "invocation": dict(invocation),
        "timings": dict(timings),
    }
    if spill is not None:
        doc["spill"] = dict(spill)
    return doc


def read_document(event: Any, role: str) -> dict[str, Any]:
    """Check that ``event`` is an intermediate document meant for ``role``; IntermediateError if not."""
    if not isinstance(event, Mapping) or event.get("kind") != KIND:
        raise IntermediateError(
            f"this function is the {role} stage of a chained pipeline: it takes the previous stage's "
            "intermediate document, not an invocation event"
        )
    if event.get("next") != role:
        raise IntermediateError(f"this document is for the {event.get('next')} stage, not {role}")
    for key, kind in (("accept", str), ("invocation", dict), ("timings", dict)):
        if not isinstance(event.get(key), kind):
            raise IntermediateError(f"the intermediate document has no valid {key!r}")
    if "value" not in event:
        raise IntermediateError("the intermediate document has no 'value'")
    return dict(event)
