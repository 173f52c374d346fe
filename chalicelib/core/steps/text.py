"""The ``text`` pre step: a JSON string property, cleaned and length-limited."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    Frozen,
    Json,
    Text,
    Value,
)
from chalicelib.core.steps.base import Params, Step, StepContext


class TextParams(Params):
    field: Text | None = Field(
        default=None, description="the string property to clean; default: the input's only string"
    )
    normalize: Literal["NFC", "NFKC", "none"] = Field(
        default="NFKC", description="Unicode normalization (NFKC also folds ligatures and full-width forms)"
    )
    lowercase: bool = False
    strip: bool = Field(default=True, description="remove white space at both ends")
    collapse_whitespace: bool = Field(default=True, description="runs of white space become one space")
    remove_control: bool = Field(default=True, description="drop control and zero-width characters")
    min_length: int | None = Field(
        default=None, ge=0, description="characters after cleaning; default: the model's minLength"
    )
    max_length: int | None = Field(
        default=None, ge=1, description="characters after cleaning; default: the model's maxLength"
    )
    truncate: bool = Field(default=False, description="cut longer text to max_length instead of refusing it")
    max_input_length: int = Field(
        default=100_000, ge=1, le=5_000_000, description="the longest text a request may send when truncating"
    )


def _string_props(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if schema.get("type") != "object":
        return {}
    props: dict[str, Any] = schema.get("properties", {})
    return {n: p for n, p in props.items() if isinstance(p, dict) and p.get("type") == "string"}


class TextArgs(Frozen):
    """What ``TextRun`` is built from: the property cleaned and its limits after cleaning."""

    params: TextParams
    field: str
    min_length: int
    max_length: int | None


class TextStep(Step):
    name = "text"
    stage = "pre"
    params_model = TextParams
    summary = "a JSON string property -> Unicode-normalized, cleaned, length-limited"
    params: TextParams

    def _field(self, upstream: Json) -> tuple[str, dict[str, Any]]:
        strings = _string_props(upstream.json_schema)
        wanted = self.params.field
        if wanted is not None:
            if wanted not in strings:
                raise ProtocolError(
                    f"pre step text cleans property {wanted!r}, but the input's string properties are: "
                    + (", ".join(map(repr, strings)) or "none")
                )
            return wanted, strings[wanted]
        if len(strings) != 1:
            raise ProtocolError(
                "pre step text needs one string property to clean; the input has "
                + (", ".join(map(repr, strings)) or "none"),
                hint="choose it with - text: {field: NAME}",
            )
        ((name, schema),) = strings.items()
        return name, schema

    def _model_field(self, ctx: StepContext, name: str) -> dict[str, Any]:
        native = ctx.native.inputs
        if isinstance(native, Json):
            return _string_props(native.json_schema).get(name, {})
        return {}

    def limits(self, ctx: StepContext, name: str) -> tuple[int, int | None]:
        """(min, max) characters of the cleaned text: the parameters, else the model's own limits."""
        model = self._model_field(ctx, name)
        low = self.params.min_length if self.params.min_length is not None else model.get("minLength", 0)
        high = self.params.max_length if self.params.max_length is not None else model.get("maxLength")
        if high is not None and low > high:
            raise ProtocolError(f"pre step text: min_length {low} is more than max_length {high}")
        if self.params.truncate and high is None:
            raise ProtocolError("pre step text: truncate needs max_length (the model sets none)")
        return low, high

    def public_input(self, ctx: StepContext) -> Value:
        native = ctx.native.inputs
        if not isinstance(native, Json):
            raise ProtocolError(
                f"pre step text cleans a predictor's JSON text, but the {ctx.native.framework} model takes "
                f"{native.describe()}"
            )
        name, schema = self._field(native)
        low, high = self.limits(ctx, name)
        public = {k: v for k, v in schema.items() if k not in ("minLength", "maxLength")}
        limit = self.params.max_input_length if self.params.truncate or high is None else high
        public["maxLength"] = limit
        if low:
            public["minLength"] = 1  # white space alone may clean to less; that is checked after cleaning
        props = {**native.json_schema["properties"], name: public}
        return Json(json_schema={**native.json_schema, "properties": props})

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        if not isinstance(upstream, Json):
            raise self.refuse(upstream, "a JSON object with a string property")
        name, schema = self._field(upstream)
        low, high = self.limits(ctx, name)
        cleaned = {k: v for k, v in schema.items() if k not in ("minLength", "maxLength")}
        if low:
            cleaned["minLength"] = low
        if high is not None:
            cleaned["maxLength"] = high
        props = {**upstream.json_schema["properties"], name: cleaned}
        return Json(json_schema={**upstream.json_schema, "properties": props})

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> TextArgs:
        assert isinstance(upstream, Json)
        field, _ = self._field(upstream)
        low, high = self.limits(ctx, field)
        return TextArgs(params=self.params, field=field, min_length=low, max_length=high)
