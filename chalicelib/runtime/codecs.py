"""The wire side of the runtime: the invocation event's body in, the response body out.

Everything a client can get wrong is reported as a ``RequestError`` (a 4xx the handler returns), with JSON
pointers into the request so a person can find the offending value. Shapes follow the JSON Schemas that
``core/protocol.py`` writes into the model config file (``request_wire``/``response_wire``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from chalicelib.core.jsontext import JsonTextError, loads
from chalicelib.core.protocol import FLOAT_TYPES, INT_TYPES, Tensors, TensorSpec, dtype_name, is_fixed
from chalicelib.core.wire import BASE64, UTF8, ErrorDocument, error_document
from chalicelib.runtime.predictor import File, Image

FLOAT64_MAX = 1.7976931348623157e308
MAX_ERRORS = 20
"""Problems listed per response: enough to fix a request, bounded for a million-row batch."""


class RequestError(Exception):
    """A client problem; the handler turns it into a 4xx response instead of raising to Lambda."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "InvalidRequest",
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.errors = errors

    def body(self) -> ErrorDocument:
        return error_document(self.code, self.message, errors=self.errors)


def unsupported_media_type(content_type: str, offered: tuple[str, ...]) -> RequestError:
    return RequestError(
        f"content type {content_type!r} is not accepted; send one of: {', '.join(offered)}",
        status=415,
        code="UnsupportedMediaType",
    )


class Problems:
    """Collects what is wrong with a request, so one response names every problem (up to a limit)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.total = 0

    def add(self, message: str, *, pointer: str | None = None, **where: Any) -> None:
        self.total += 1
        if len(self.items) < MAX_ERRORS:
            entry: dict[str, Any] = {} if pointer is None else {"pointer": pointer}
            self.items.append({**entry, **where, "message": message})

    def __bool__(self) -> bool:
        return self.total > 0

    def error(self) -> RequestError:
        first = self.items[0]
        where = first.get("pointer")
        if where is None and "row" in first:
            where = f"row {first['row']}" + (f", column {first['column']}" if "column" in first else "")
        text = f"{where}: {first['message']}" if where else first["message"]
        if self.total > 1:
            text += f" (and {self.total - 1} more problem{'s' if self.total > 2 else ''})"
        return RequestError(text, errors=self.items)

    def check(self) -> None:
        if self:
            raise self.error()


def invalid(message: str, pointer: str = "") -> RequestError:
    """One problem, as a RequestError."""
    problems = Problems()
    problems.add(message, pointer=pointer)
    return problems.error()


def pointer(base: str, *parts: str | int) -> str:
    """An RFC 6901 JSON pointer: ``~`` and ``/`` in keys are escaped."""
    for part in parts:
        base += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return base


# --------------------------------------------------------------------------- request bodies


def event_body(event: Mapping[str, Any]) -> bytes:
    """The bytes of an InvocationEvent's body, read strictly: the event may come from anyone."""
    body = event.get("body", "")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise invalid("the invocation event's body must be a string")
    encoding = event.get("body_encoding", UTF8)
    if encoding == BASE64:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("the body is marked base64 but is not valid base64") from None
    if encoding not in (UTF8, None):
        raise invalid(f"body_encoding must be 'utf8' or 'base64', got {encoding!r}")
    return body.encode("utf-8", errors="surrogatepass")


def parse_json(data: bytes) -> Any:
    """Parse a JSON body, nesting bounded before parsing (``core/jsontext.py``); NaN/Infinity literals
    are let through so validators can point at them."""
    if not data.strip():
        raise invalid("the body is empty; send a JSON document")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(f"the body is not UTF-8 text (byte {exc.start})") from None
    try:
        return loads(data)
    except JsonTextError as exc:
        raise invalid(exc.message, exc.pointer) from None


def object_with(doc: Any, keys: tuple[str, ...], what: str) -> tuple[str, Any]:
    """The single allowed key a JSON object body carries (``records`` or ``rows``, ``inputs``, ...)."""
    expected = " or ".join(repr(k) for k in keys)
    if not isinstance(doc, dict):
        raise invalid(f"{what} must be a JSON object with {expected}, got {json_type(doc)}")
    problems = Problems()
    present = [k for k in keys if k in doc]
    for key in doc:
        if key not in keys:
            problems.add(f"unknown key; {what} has {expected}", pointer=pointer("", key))
    if not present:
        problems.add(f"{what} needs {expected}", pointer="")
    elif len(present) > 1:
        problems.add(f"send only one of {expected}", pointer="")
    problems.check()
    return present[0], doc[present[0]]


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def decode_tensors(doc: Any, spec: Tensors) -> dict[str, Any]:
    """``{"inputs": {name: nested list}}`` -> arrays of each input's dtype, rank and fixed dimensions."""
    _, inputs = object_with(doc, ("inputs",), "the request")
    if not isinstance(inputs, dict):
        raise invalid(f"expected an object of named tensors, got {json_type(inputs)}", "/inputs")
    problems = Problems()
    names = {t.name for t in spec.tensors}
    for key in inputs:
        if key not in names:
            problems.add(
                f"unknown input; the model takes {', '.join(sorted(names))}", pointer=pointer("/inputs", key)
            )
    out: dict[str, Any] = {}
    for tensor in spec.tensors:
        where = pointer("/inputs", tensor.name)
        if tensor.name not in inputs:
            problems.add(f"missing input ({tensor.describe()})", pointer=where)
        elif tensor.datatype is None:  # a non-tensor input (sequence, map): handed over as sent
            out[tensor.name] = inputs[tensor.name]
        else:
            array, problem = _tensor(inputs[tensor.name], tensor)
            if problem:
                problems.add(problem, pointer=where)
            else:
                out[tensor.name] = array
    problems.check()
    return out


def _tensor(value: Any, tensor: TensorSpec) -> tuple[Any, str]:
    """The array for one input, or why there is none. Converting with the target dtype directly would
    truncate 1.5 to 1, wrap 300 to 44 in uint8 and take ``true`` for 1.0: the values are checked first."""
    datatype = str(tensor.datatype)
    wrong_values = f"expected a nested list of {_leaf(datatype)} ({tensor.describe()})"
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged nesting; [1.5, 10**400]
        return None, wrong_values
    if raw.ndim != len(tensor.shape):
        return (
            None,
            f"expected {len(tensor.shape)} dimension(s) ({tensor.describe()}), got shape {list(raw.shape)}",
        )
    if any(is_fixed(d) and raw.shape[i] != d for i, d in enumerate(tensor.shape)):
        return None, f"expected shape {tensor.describe()}, got {list(raw.shape)}"
    kind = raw.dtype.kind if raw.size else ""
    if datatype == "BYTES":
        return (raw.astype(object), "") if kind in ("", "U") else (None, wrong_values)
    dtype = np.dtype(dtype_name(tensor.datatype))
    if datatype == "BOOL":
        return (raw.astype(dtype), "") if kind in ("", "b") else (None, wrong_values)
    if kind not in ("", "i", "u", "f"):
        return None, wrong_values
    if kind == "f" and not np.all(np.isfinite(raw)):
        return None, "values must be finite numbers (no NaN or infinity)"
    if datatype in INT_TYPES and raw.size:
        info = np.iinfo(dtype)
        if (kind == "f" and not np.all(raw == np.floor(raw))) or raw.min() < info.min or raw.max() > info.max:
            return None, wrong_values
    with np.errstate(over="ignore"):
        array = raw.astype(dtype)
    if datatype in FLOAT_TYPES and not np.all(np.isfinite(array)):  # 1e39 overflows float32
        return None, f"values must be finite and fit {dtype_name(tensor.datatype)}"
    return array, ""


def _leaf(datatype: str) -> str:
    if datatype in FLOAT_TYPES:
        return "numbers"
    if datatype in INT_TYPES:
        return "integers in range"
    return "booleans" if datatype == "BOOL" else "strings"


# --------------------------------------------------------------------------- JSON Schema subset


_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")


def _is_type(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    if kind == "number":
        return not isinstance(value, bool) and isinstance(value, int | float)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, though Python says so."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def check_schema(value: Any, schema: Mapping[str, Any], where: str, problems: Problems) -> Any:
    """Validate ``value`` against the JSON Schema subset the predictor inspector emits.

    Returns the value normalized for Python code (``3.0`` where an integer belongs becomes ``3``). Covers
    type, properties, required, additionalProperties, minimum/maximum (and exclusive), min/maxLength,
    min/maxItems, pattern, enum, const, items, anyOf/oneOf and base64 contentEncoding; a validator this
    small keeps the image free of ``jsonschema`` and its dependencies.
    """
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _check_any(value, schema[key], where, problems)
    if "const" in schema and not _same(value, schema["const"]):
        problems.add(f"must be {json.dumps(schema['const'])}", pointer=where)
        return value
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        problems.add("must be one of " + ", ".join(json.dumps(v) for v in schema["enum"]), pointer=where)
        return value
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is_type(value, k) for k in kinds):
            problems.add(f"expected {' or '.join(kinds)}, got {json_type(value)}", pointer=where)
            return value
        if "integer" in kinds and "number" not in kinds and isinstance(value, float):
            value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        problems.add("must be a finite number (no NaN or infinity)", pointer=where)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if (
            isinstance(value, int)
            and kinds is not None
            and "integer" not in kinds
            and abs(value) > FLOAT64_MAX
        ):
            problems.add("is too large for a 64-bit float", pointer=where)
            return value
        _check_bounds(value, schema, where, problems)
    elif isinstance(value, str):
        _check_string(value, schema, where, problems)
    elif isinstance(value, list):
        value = _check_array(value, schema, where, problems)
    elif isinstance(value, dict):
        value = _check_object(value, schema, where, problems)
    return value


def _check_any(value: Any, options: list[Any], where: str, problems: Problems) -> Any:
    failures: list[Problems] = []
    for option in options:
        trial = Problems()
        result = check_schema(value, option, where, trial)
        if not trial:
            return result
        failures.append(trial)
    # Report the branch that matched the value's type (Optional[T]: T's problems, not "expected null").
    typed = [
        f for f, o in zip(failures, options, strict=True) if "type" in o and _is_type(value, str(o["type"]))
    ]
    chosen = typed[0] if len(typed) == 1 else None
    if chosen is not None:
        for item in chosen.items:
            problems.add(item["message"], pointer=item["pointer"])
    else:
        kinds = [str(o.get("type", "a value")) for o in options]
        problems.add(f"expected {' or '.join(kinds)}, got {json_type(value)}", pointer=where)
    return value


def _check_bounds(value: float, schema: Mapping[str, Any], where: str, problems: Problems) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        problems.add(f"must be at least {schema['minimum']}", pointer=where)
    if "maximum" in schema and value > schema["maximum"]:
        problems.add(f"must be at most {schema['maximum']}", pointer=where)
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        problems.add(f"must be greater than {schema['exclusiveMinimum']}", pointer=where)
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        problems.add(f"must be less than {schema['exclusiveMaximum']}", pointer=where)


def _check_string(value: str, schema: Mapping[str, Any], where: str, problems: Problems) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.add(f"must be at least {schema['minLength']} character(s) long", pointer=where)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.add(f"is longer than {schema['maxLength']} characters ({len(value)})", pointer=where)
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.add(f"must match the pattern {schema['pattern']}", pointer=where)
    if schema.get("contentEncoding") == "base64":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problems.add("must be base64-encoded", pointer=where)


def _check_array(value: list[Any], schema: Mapping[str, Any], where: str, problems: Problems) -> list[Any]:
    if "minItems" in schema and len(value) < schema["minItems"]:
        problems.add(f"needs at least {schema['minItems']} item(s)", pointer=where)
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        problems.add(f"takes at most {schema['maxItems']} item(s), got {len(value)}", pointer=where)
    items = schema.get("items")
    if not isinstance(items, Mapping):
        return value
    return [check_schema(v, items, pointer(where, i), problems) for i, v in enumerate(value)]


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], where: str, problems: Problems
) -> dict[str, Any]:
    props: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name in schema.get("required", ()):
        if name not in value:
            problems.add("required property is missing", pointer=pointer(where, name))
    out: dict[str, Any] = {}
    for key, item in value.items():
        here = pointer(where, key)
        if key in props:
            out[key] = check_schema(item, props[key], here, problems)
        elif extra is False:
            known = ", ".join(props) or "none"
            problems.add(f"unknown property (allowed: {known})", pointer=here)
        elif isinstance(extra, Mapping):
            out[key] = check_schema(item, extra, here, problems)
        else:
            out[key] = item
    return out


# --------------------------------------------------------------------------- response bodies


def to_jsonable(value: Any) -> Any:
    """Plain JSON data from what models and user code return: arrays, numpy scalars, dataclasses,
    pydantic models, ``Image``/``File``/bytes (base64), tuples and sets."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [to_jsonable(v) for v in value.tolist()] if value.ndim else to_jsonable(value.item())
        return value.tolist()
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, Image | File | bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    dump = getattr(value, "model_dump", None)  # pydantic models, without importing pydantic's types here
    if callable(dump):
        return to_jsonable(dump(mode="json"))
    raise TypeError(f"{type(value).__name__} is not JSON data")


def dumps(value: Any) -> str:
    """Compact JSON; NaN and infinity raise (ValueError) rather than produce invalid JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
