"""The data transmission protocol: typed values that flow between request, steps, model and response.

A *value type* says what one stage of the chain carries (tensors, tabular records, an encoded image,
labelled scores, a figure, arbitrary JSON). Each public value type knows its wire form: content types,
JSON Schema with a generated example, and its Open Inference Protocol v2 tensor metadata. Everything here
is pure data so the resolved protocol can be written into the model config file and read by every later
stage (validation, OpenAPI, runtime decoding).
"""

from __future__ import annotations

import base64
import json
import struct
import unicodedata
import zlib
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DataType = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
"""Open Inference Protocol v2 tensor data types."""

Dim = int | str
"""A tensor dimension: a fixed size, -1 for unknown, or a symbolic name (``"batch"``)."""

ImageFormat = Literal["png", "jpeg", "webp"]

_NUMPY_NAMES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "bytes",
}  # fmt: skip
FLOAT_TYPES: frozenset[str] = frozenset({"FP16", "FP32", "FP64"})
INT_TYPES: frozenset[str] = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
)


def _printable(value: str) -> str:
    """Refuse control characters and line separators: they corrupt YAML files, logs and headers."""
    for ch in value:
        if ch not in "\n\t" and (unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")):
            raise ValueError(f"contains the control character U+{ord(ch):04X}")
    return value


Text = Annotated[str, AfterValidator(_printable)]
"""A user-supplied string that may be written into config files, labels and charts."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _is_none(value: object) -> bool:
    return value is None


def dtype_name(datatype: DataType | None) -> str:
    return _NUMPY_NAMES[datatype] if datatype else "?"


def is_fixed(dim: Dim) -> bool:
    return isinstance(dim, int) and dim >= 0


def dims_fit(produced: Dim, expected: Dim) -> bool:
    """A symbolic or unknown dimension on either side fits anything; fixed sizes must agree."""
    return not (is_fixed(produced) and is_fixed(expected)) or produced == expected


def oip_shape(shape: tuple[Dim, ...]) -> list[int]:
    return [d if is_fixed(d) else -1 for d in shape]  # type: ignore[misc]


class MapSpec(Frozen):
    """A value that is a map of key -> one value rather than a tensor: ONNX ``map(K, tensor(V))``, or
    ``seq(map(K, tensor(V)))``, one map per row (skl2onnx's and onnxmltools' ZipMap of class scores)."""

    key: DataType = Field(description="INT64 or BYTES")
    value: DataType
    sequence: bool = Field(description="a sequence of maps, one per row (shape [batch])")
    keys: tuple[str, ...] | None = Field(
        default=None,
        description="the keys every map holds, in the model's order, as JSON spells them (known from a "
        "ZipMap's class labels)",
        exclude_if=_is_none,
    )


class TensorSpec(Frozen):
    """One named tensor of a model's native contract."""

    name: str
    datatype: DataType | None = Field(description="OIP v2 datatype; null for non-tensor values")
    shape: tuple[Dim, ...] = ()
    type_repr: str | None = Field(
        default=None,
        description="the framework's own type, for values that are not tensors",
        exclude_if=_is_none,
    )
    map_of: MapSpec | None = Field(
        default=None, description="what a map (or sequence of maps) holds", exclude_if=_is_none
    )

    def scores_view(self) -> TensorSpec | None:
        """A map of known keys to numbers, seen as the dense tensor it stands for (``[batch, keys]`` for
        a sequence of maps): what post steps on class scores read; None for anything else."""
        m = self.map_of
        if m is None or m.keys is None or m.value not in FLOAT_TYPES:
            return None
        width = len(m.keys)
        return TensorSpec(
            name=self.name, datatype=m.value, shape=("batch", width) if m.sequence else (width,)
        )

    def describe(self) -> str:
        if self.datatype is None:
            return self.type_repr or "non-tensor value"
        return f"{dtype_name(self.datatype)}[{','.join(str(d) for d in self.shape)}]"

    def fits(self, expected: TensorSpec) -> bool:
        return (
            self.datatype is not None
            and self.datatype == expected.datatype
            and len(self.shape) == len(expected.shape)
            and all(dims_fit(p, e) for p, e in zip(self.shape, expected.shape, strict=True))
        )


class Feature(Frozen):
    name: str
    datatype: DataType = "FP64"
    categories: tuple[str, ...] | None = Field(
        default=None,
        description="a categorical feature: the names a request may send (mapped to numbers)",
        exclude_if=_is_none,
    )


# --------------------------------------------------------------------------- value types


class Tensors(Frozen):
    """Named tensors, as a model takes or gives them."""

    kind: Literal["tensors"] = "tensors"
    tensors: tuple[TensorSpec, ...]

    def describe(self) -> str:
        if len(self.tensors) == 1:
            return self.tensors[0].describe()
        return "(" + ", ".join(f"{t.name}: {t.describe()}" for t in self.tensors) + ")"


class Records(Frozen):
    """Tabular rows keyed by feature name (JSON records, positional rows, or CSV)."""

    kind: Literal["records"] = "records"
    features: tuple[Feature, ...]
    rows: int | None = Field(
        default=None,
        ge=1,
        description="the model takes exactly this many rows a request",
        exclude_if=_is_none,
    )

    def describe(self) -> str:
        return "records(" + ", ".join(f.name for f in self.features) + ")"


class EncodedImage(Frozen):
    """An encoded image (PNG/JPEG/WebP bytes, or base64 in JSON)."""

    kind: Literal["image"] = "image"
    formats: tuple[ImageFormat, ...] = ("png", "jpeg", "webp")
    width: int | None = None
    height: int | None = None

    def describe(self) -> str:
        return "image(" + "/".join(self.formats) + ")"


class Labels(Frozen):
    """Per row, the top classes with their scores: ``[{label, score}, ...]``."""

    kind: Literal["labels"] = "labels"
    labels: tuple[str, ...]
    top_k: int

    def describe(self) -> str:
        return f"labels(top {self.top_k} of {len(self.labels)})"


class Boxes(Frozen):
    """Per image, detected objects best first: ``[{box: [x1, y1, x2, y2], label, score}, ...]``.

    Coordinates are pixels of the request's image (of the model input when the request is no image)."""

    kind: Literal["boxes"] = "boxes"
    labels: tuple[str, ...] | None = Field(description="class names; null: labels are class indices")
    max_detections: int

    def describe(self) -> str:
        classes = f"{len(self.labels)} classes" if self.labels else "class indices"
        return f"boxes(at most {self.max_detections}, {classes})"


class Json(Frozen):
    """Any JSON value that matches a JSON Schema (a predictor's arguments or result)."""

    kind: Literal["json"] = "json"
    json_schema: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        return "json(" + str(self.json_schema.get("type", "any")) + ")"


class Figure(Frozen):
    """A rendered picture (PNG) of a structured result, which travels with it."""

    kind: Literal["figure"] = "figure"
    chart: str
    media_type: Literal["image/png"] = "image/png"
    data: Value

    def describe(self) -> str:
        return f"figure({self.chart}, {self.media_type}) of {self.data.describe()}"


Value = Annotated[
    Union[Tensors, Records, EncodedImage, Labels, Boxes, Json, Figure], Field(discriminator="kind")
]
Figure.model_rebuild()


def value_fits(produced: Value, expected: Value) -> bool:
    """Whether a stage's output can be fed to the next stage's input."""
    if isinstance(expected, Json) and not expected.json_schema:
        return True
    if isinstance(produced, Tensors) and isinstance(expected, Tensors):
        return len(produced.tensors) == len(expected.tensors) and all(
            p.fits(e) for p, e in zip(produced.tensors, expected.tensors, strict=True)
        )
    if isinstance(produced, Json) and isinstance(expected, Json):
        return schema_fits(produced.json_schema, expected.json_schema)
    return produced == expected


def _types(schema: dict[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    if kind is None:
        if "const" in schema:
            return {_json_kind(schema["const"])}
        if "enum" in schema:
            return {_json_kind(v) for v in schema["enum"]}
        return None
    return {kind} if isinstance(kind, str) else set(kind)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "object")


def schema_fits(produced: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether every value ``produced`` allows is one ``expected`` takes, judged conservatively on the
    JSON Schema subset our generators emit (types, properties, required, items, enum/const, bounds).
    A produced schema that says nothing (``{}``, untyped code) fits only an expected ``{}``."""
    if not expected or produced == expected:
        return True
    if not produced:
        return False
    for key in ("anyOf", "oneOf"):
        if key in produced:
            return all(schema_fits(option, expected) for option in produced[key])
    for key in ("anyOf", "oneOf"):
        if key in expected:
            return any(schema_fits(produced, option) for option in expected[key])
    if "const" in expected or "enum" in expected:
        allowed = [expected["const"]] if "const" in expected else list(expected["enum"])
        mine = [produced["const"]] if "const" in produced else produced.get("enum")
        return mine is not None and all(v in allowed for v in mine)
    want, have = _types(expected), _types(produced)
    if want is not None and "number" in want:
        want.add("integer")  # every integer is a number
    if want is not None and (have is None or not have <= want):
        return False
    for low in ("minimum", "exclusiveMinimum", "minLength", "minItems"):
        if low in expected and produced.get(low, float("-inf")) < expected[low]:
            return False
    for high in ("maximum", "exclusiveMaximum", "maxLength", "maxItems"):
        if high in expected and produced.get(high, float("inf")) > expected[high]:
            return False
    items = expected.get("items")
    if isinstance(items, dict) and not schema_fits(produced.get("items", {}), items):
        return False
    if (have or set()) & {"object"} and ("properties" in expected or "required" in expected):
        return _object_fits(produced, expected)
    return True


def _object_fits(produced: dict[str, Any], expected: dict[str, Any]) -> bool:
    mine: dict[str, Any] = produced.get("properties", {})
    theirs: dict[str, Any] = expected.get("properties", {})
    if not set(expected.get("required", ())) <= set(produced.get("required", ())):
        return False
    extra = expected.get("additionalProperties", True)
    for name, schema in mine.items():
        allowed = theirs.get(name, extra)
        if allowed is False or (isinstance(allowed, dict) and not schema_fits(schema, allowed)):
            return False
    return not (produced.get("additionalProperties", True) is not False and extra is False)


# --------------------------------------------------------------------------- wire forms


DTYPE_RANGES: dict[str, tuple[float, float]] = {
    "FP16": (-65504.0, 65504.0),
    "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
    "FP64": (-3.4028234663852886e38, 3.4028234663852886e38),  # see below
    **{f"INT{b}": (-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)},
    **{f"UINT{b}": (0, 2**b - 1) for b in (8, 16, 32, 64)},
}
"""The finite values each numeric datatype holds: a request value outside is refused (a 400), not cast
to infinity or wrapped around. FP64 takes float32's range too: steps, models and charts do arithmetic on
request values (a scaler's ``(x - mean) / std``, an axis's ``max - min``), which overflows to infinity
near float64's own limit and would fail the model instead of the request."""


def number_schema(datatype: DataType) -> dict[str, Any]:
    """The JSON Schema of one value of a numeric ``datatype``: its type, range and numpy name as
    ``format`` (an annotation; validators use the bounds, messages the name)."""
    low, high = DTYPE_RANGES[datatype]
    kind = "number" if datatype in FLOAT_TYPES else "integer"
    return {"type": kind, "format": dtype_name(datatype), "minimum": low, "maximum": high}


def _leaf_schema(datatype: DataType) -> dict[str, Any]:
    if datatype in FLOAT_TYPES or datatype in INT_TYPES:
        return number_schema(datatype)
    if datatype == "BOOL":
        return {"type": "boolean"}
    return {"type": "string"}


def _nested_array(datatype: DataType | None, shape: tuple[Dim, ...], *, exact: bool = True) -> dict[str, Any]:
    """Nested arrays of ``datatype`` leaves. With ``exact`` (requests) a fixed dimension is an exact item
    count (the batch too: a model exported for 3 rows takes 3), so a request that cannot fit is refused
    before any function runs. An output's declared shape is the exporter's claim, not onnxruntime's
    promise (a string normalizer's output is as long as what it keeps): answers are not held to it."""
    if datatype is None:
        return {}
    schema = _leaf_schema(datatype)
    for dim in reversed(shape):
        schema = {"type": "array", "items": schema}
        if exact and is_fixed(dim):
            schema["minItems"] = schema["maxItems"] = dim
    return schema


def _map_schema(m: MapSpec) -> dict[str, Any]:
    """A map as a JSON object keyed by the map's keys (strings, as JSON has them); a sequence of maps,
    an array of them."""
    value = _leaf_schema(m.value)
    one: dict[str, Any] = {"type": "object", "additionalProperties": value}
    if m.keys is not None:
        one = _object({key: value for key in m.keys})
    return {"type": "array", "items": one} if m.sequence else one


def _value_schema(spec: TensorSpec, *, exact: bool = True) -> dict[str, Any]:
    if spec.map_of is not None:
        return _map_schema(spec.map_of)
    return _nested_array(spec.datatype, spec.shape, exact=exact)


def _example_dim(dim: Dim) -> int:
    return dim if is_fixed(dim) else 1  # type: ignore[return-value]


_EXAMPLE_LEAVES: dict[str, Any] = {"FP16": 0.0, "FP32": 0.0, "FP64": 0.0, "BOOL": False, "BYTES": ""}


def _tensor_example(spec: TensorSpec) -> Any:
    if spec.map_of is not None:
        m = spec.map_of
        leaf = _EXAMPLE_LEAVES.get(m.value, 0)
        if m.value in FLOAT_TYPES and m.keys:
            leaf = round(1.0 / len(m.keys), 4)  # scores of equally likely classes
        one = {key: leaf for key in m.keys or ("0",)}
        return [one] if m.sequence else one
    value = _EXAMPLE_LEAVES.get(spec.datatype or "", 0)
    for dim in reversed(spec.shape):
        value = [value] * _example_dim(dim)
    return value


def tiny_png(width: int, height: int) -> bytes:
    """A valid white RGB PNG, so examples of image requests are real images."""
    raw = b"".join(b"\x00" + b"\xff" * (3 * width) for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


class Wire(Frozen):
    """One direction of the public contract: what travels over HTTP."""

    content_types: tuple[str, ...]
    json_schema: dict[str, Any]
    example: Any


class OipTensor(Frozen):
    name: str
    datatype: DataType
    shape: list[int]
    parameters: dict[str, str] | None = Field(default=None, exclude_if=_is_none)


_LABEL_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}


_BOX_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "box": {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 4,
            "maxItems": 4,
            "description": "[x1, y1, x2, y2]: left, top, right, bottom in pixels",
        },
        "label": {"type": "string"},
        "score": {"type": "number"},
    },
    "required": ["box", "label", "score"],
    "additionalProperties": False,
}


def _feature_schema(feature: Feature) -> dict[str, Any]:
    if feature.categories:
        return {"type": "string", "enum": list(feature.categories)}
    return _nested_array(feature.datatype, ())


def request_wire(value: Value) -> Wire:
    """How a request carrying ``value`` looks on the wire."""
    if isinstance(value, Tensors):
        props = {t.name: _value_schema(t) for t in value.tensors}
        return Wire(
            content_types=("application/json",),
            json_schema=_object({"inputs": _object(props)}),
            example={"inputs": {t.name: _tensor_example(t) for t in value.tensors}},
        )
    if isinstance(value, Records):
        record = _object({f.name: _feature_schema(f) for f in value.features})
        columns = [_feature_schema(f) for f in value.features]
        row: dict[str, Any] = {
            "type": "array",
            "items": columns[0] if columns else {"type": "number"},
            "minItems": len(value.features),
            "maxItems": len(value.features),
            "description": "values in this order: " + ", ".join(f.name for f in value.features),
        }
        if any(column != columns[0] for column in columns):  # categories, or mixed dtypes: per column
            row["prefixItems"] = columns
            row["items"] = False
        count: dict[str, Any] = {"minItems": value.rows or 1}
        if value.rows is not None:
            count["maxItems"] = value.rows
        schema = {
            "oneOf": [
                _object({"records": {"type": "array", "items": record, **count}}),
                _object({"rows": {"type": "array", "items": row, **count}}),
            ]
        }
        example = {
            f.name: f.categories[0] if f.categories else _EXAMPLE_LEAVES.get(f.datatype, 0)
            for f in value.features
        }
        return Wire(
            content_types=("application/json", "text/csv"),
            json_schema=schema,
            example={"records": [example] * (value.rows or 1)},
        )
    if isinstance(value, EncodedImage):
        png = tiny_png(value.width or 8, value.height or 8)
        media = [f"image/{fmt}" for fmt in value.formats]
        schema = _object(
            {
                "image": {
                    "type": "string",
                    "contentEncoding": "base64",
                    "contentMediaType": media[0],
                    "description": "the image bytes, base64-encoded (" + ", ".join(media) + ")",
                }
            }
        )
        return Wire(
            content_types=(*media, "application/json"),
            json_schema=schema,
            example={"image": base64.b64encode(png).decode()},
        )
    if isinstance(value, Json):
        return Wire(
            content_types=("application/json",),
            json_schema=value.json_schema,
            example=schema_example(value.json_schema),
        )
    raise TypeError(f"{value.describe()} cannot be a request")


def response_wire(value: Value) -> Wire:
    """How a response carrying ``value`` looks on the wire."""
    schema, example = _response_body(value)
    content_types: tuple[str, ...] = ("application/json",)
    if isinstance(value, Figure):
        content_types = ("application/json", value.media_type)
    return Wire(content_types=content_types, json_schema=schema, example=example)


def _response_body(value: Value) -> tuple[dict[str, Any], Any]:
    if isinstance(value, Tensors):
        props = {t.name: _value_schema(t, exact=False) for t in value.tensors}
        return (
            _object({"outputs": _object(props)}),
            {"outputs": {t.name: _tensor_example(t) for t in value.tensors}},
        )
    if isinstance(value, Labels):
        row = {"type": "array", "items": _LABEL_ITEM, "maxItems": value.top_k}
        example_row = [
            {"label": label, "score": round(1.0 / len(value.labels), 4)}
            for label in value.labels[: value.top_k]
        ]
        return (
            _object({"predictions": {"type": "array", "items": row}}),
            {"predictions": [example_row]},
        )
    if isinstance(value, Boxes):
        row = {"type": "array", "items": _BOX_ITEM, "maxItems": value.max_detections}
        label = value.labels[0] if value.labels else "0"
        detection = {"box": [0.0, 0.0, 8.0, 8.0], "label": label, "score": 0.9}
        return (
            _object({"detections": {"type": "array", "items": row}}),
            {"detections": [[detection]]},
        )
    if isinstance(value, Json):
        return _object({"output": value.json_schema}), {"output": schema_example(value.json_schema)}
    if isinstance(value, Figure):
        inner_schema, inner_example = _response_body(value.data)
        figure = _object(
            {
                "media_type": {"const": value.media_type},
                "data": {"type": "string", "contentEncoding": "base64"},
            }
        )
        props = dict(inner_schema["properties"])
        props["figure"] = figure
        example = dict(inner_example)
        example["figure"] = {
            "media_type": value.media_type,
            "data": base64.b64encode(tiny_png(1, 1)).decode(),
        }
        return _object(props), example
    raise TypeError(f"{value.describe()} cannot be a response")


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def schema_example(schema: dict[str, Any]) -> Any:
    """A deterministic value that satisfies ``schema`` (for the subset our generators emit)."""
    if "example" in schema:
        return schema["example"]
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return schema_example(schema[key][0])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: schema_example(v) for k, v in props.items() if k in required}
    if kind == "array":
        return [schema_example(schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind in ("number", "integer"):
        low, high = schema.get("minimum"), schema.get("maximum")
        value = low if low is not None and low > 0 else high if high is not None and high < 0 else 0
        return float(value) if kind == "number" else int(value)  # the allowed value nearest zero
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("contentEncoding") == "base64":
            return base64.b64encode(tiny_png(1, 1)).decode()
        return "text"
    return None


def _oip_tensor(t: TensorSpec) -> OipTensor | None:
    """A tensor as itself; a map of known keys as the dense tensor it stands for, its keys (the columns)
    in ``parameters.keys`` as a JSON array; any other map as one JSON document per row (BYTES)."""
    if t.map_of is not None:
        dense = t.scores_view()
        if dense is not None and t.map_of.keys is not None:
            keys = json.dumps(list(t.map_of.keys), ensure_ascii=False)
            return OipTensor(
                name=t.name, datatype=t.map_of.value, shape=oip_shape(dense.shape), parameters={"keys": keys}
            )
        return OipTensor(
            name=t.name, datatype="BYTES", shape=[-1], parameters={"content_type": "application/json"}
        )
    if t.datatype is None:
        return None
    return OipTensor(name=t.name, datatype=t.datatype, shape=oip_shape(t.shape))


def oip_tensors(value: Value, *, role: Literal["input", "output"]) -> list[OipTensor]:
    """Open Inference Protocol v2 metadata of a public value, column-wise like MLServer's codecs."""
    if isinstance(value, Tensors):
        return [oip for t in value.tensors if (oip := _oip_tensor(t)) is not None]
    if isinstance(value, Records):
        return [
            OipTensor(name=f.name, datatype="BYTES" if f.categories else f.datatype, shape=[-1])
            for f in value.features
        ]
    if isinstance(value, EncodedImage):
        media = ",".join(f"image/{fmt}" for fmt in value.formats)
        return [OipTensor(name="image", datatype="BYTES", shape=[-1], parameters={"content_type": media})]
    if isinstance(value, Labels):
        return [
            OipTensor(name="label", datatype="BYTES", shape=[-1, value.top_k]),
            OipTensor(name="score", datatype="FP32", shape=[-1, value.top_k]),
        ]
    if isinstance(value, Boxes):
        return [
            OipTensor(
                name="detections",
                datatype="BYTES",
                shape=[-1],
                parameters={"content_type": "application/json"},
            )
        ]
    if isinstance(value, Figure):
        return [
            *oip_tensors(value.data, role=role),
            OipTensor(
                name="figure",
                datatype="BYTES",
                shape=[1],
                parameters={"content_type": value.media_type},
            ),
        ]
    return _json_oip(value.json_schema, role=role)


def _json_oip(schema: dict[str, Any], *, role: str) -> list[OipTensor]:
    props: dict[str, Any] = schema.get("properties", {}) if schema.get("type") == "object" else {}
    if not props:
        name = "output" if role == "output" else "input"
        return [
            OipTensor(
                name=name,
                datatype="BYTES",
                shape=[1],
                parameters={"content_type": "application/json"},
            )
        ]
    tensors = []
    for name, prop in props.items():
        kind = prop.get("type")
        if kind == "array":
            item = prop.get("items", {}).get("type")
            datatype: DataType = {"number": "FP64", "integer": "INT64", "boolean": "BOOL"}.get(item, "BYTES")  # type: ignore[assignment]
            tensors.append(OipTensor(name=name, datatype=datatype, shape=[-1]))
        elif kind in ("number", "integer", "boolean"):
            datatype = {"number": "FP64", "integer": "INT64", "boolean": "BOOL"}[kind]  # type: ignore[assignment]
            tensors.append(OipTensor(name=name, datatype=datatype, shape=[1]))
        else:
            params = {"content_type": "application/json"} if kind not in ("string", None) else None
            if prop.get("contentEncoding") == "base64":
                params = {"content_type": prop.get("contentMediaType", "application/octet-stream")}
            tensors.append(OipTensor(name=name, datatype="BYTES", shape=[1], parameters=params))
    return tensors
