"""User steps: a user's ``path/file.py:function``, typed by its annotations."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    Boxes,
    Figure,
    Frozen,
    Json,
    Labels,
    Tensors,
    Value,
    response_wire,
    schema_fits,
)
from chalicelib.core.steps.base import Params, Stage, Step, StepContext, UserSignature, UserType


def json_form(value: Value) -> dict[str, Any] | None:
    """The JSON Schema of the data a JSON-typed user step receives for ``value`` (None: not JSON)."""
    if isinstance(value, Json):
        return value.json_schema
    if isinstance(value, Labels | Boxes):
        schema = response_wire(value).json_schema
        return dict(next(iter(schema["properties"].values())))
    return None


class UserArgs(Frozen):
    """What ``UserRun`` is built from: the function, its types, whether it receives labels (in their
    response form) and the tensors a tensor-typed return is named like."""

    ref: str
    accepts: UserType | None
    returns: UserType | None
    labels_in: bool
    names: tuple[str, ...]


class UserStep(Step):
    """A user's ``path/file.py:function``; it runs only inside the model's container.

    Its annotations (read at config time without importing it) type it like a built-in: the parameter
    says what it accepts, the return what it produces. JSON types (``dict[str, float]``, a TypedDict, ...)
    receive JSON data (labels and boxes in their response form); ``dict[str, np.ndarray]`` receives or
    returns tensors named like the model's inputs (pre) or outputs (post); ``np.ndarray`` one tensor.

    A side left unannotated bridges its neighbour: an unannotated parameter takes whatever comes (the
    request's JSON when first), an unannotated return gives JSON that only the runtime checks (the model
    rejects what it cannot take; as the last post step it is the response's ``output``)."""

    name = "user"
    stage = "pre"
    params_model = Params
    summary = "user code"

    def __init__(self, ref: str, stage: Stage) -> None:
        super().__init__(Params())
        self.ref = ref
        self.stage_of = stage

    def signature(self, ctx: StepContext) -> UserSignature:
        return ctx.user_types.get(self.ref) or UserSignature(ref=self.ref, accepts=None, returns=None)

    def _refuse(self, upstream: Value, wants: str, hint: str | None = None) -> ProtocolError:
        return ProtocolError(
            f"{self.stage_of} step {self.ref} takes {wants} but receives {upstream.describe()}", hint=hint
        )

    def public_input(self, ctx: StepContext) -> Value:
        accepts = self.signature(ctx).accepts
        if accepts is None:
            return Json()
        if accepts.kind == "json":
            return Json(json_schema=accepts.json_schema)
        inputs = ctx.native.inputs
        if not isinstance(inputs, Tensors) or (accepts.kind == "tensor" and len(inputs.tensors) != 1):
            raise ProtocolError(
                f"pre step {self.ref} takes {accepts.describe()} as the first step, but the model's input "
                f"is {inputs.describe()}"
            )
        return inputs

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        sig = self.signature(ctx)
        if isinstance(upstream, Figure):
            raise self._refuse(upstream, "a value", "a visualization step must be the last post step")
        accepts = sig.accepts
        if accepts is not None:
            if accepts.kind == "json":
                schema = json_form(upstream)
                if schema is None:
                    raise self._refuse(
                        upstream,
                        accepts.describe(),
                        "annotate the parameter dict[str, np.ndarray] to receive tensors",
                    )
                if not schema_fits(schema, accepts.json_schema):
                    raise self._refuse(
                        upstream,
                        accepts.describe() + " (" + _short(accepts.json_schema) + ")",
                        "the upstream gives " + _short(schema),
                    )
            elif not isinstance(upstream, Tensors) or (
                accepts.kind == "tensor" and len(upstream.tensors) != 1
            ):
                raise self._refuse(upstream, accepts.describe())
        returns = sig.returns
        if returns is None:
            return Json()
        if returns.kind == "json":
            return Json(json_schema=returns.json_schema)
        neighbour = ctx.native.inputs if self.stage_of == "pre" else upstream
        if not isinstance(neighbour, Tensors) or (returns.kind == "tensor" and len(neighbour.tensors) != 1):
            where = "the model's input" if self.stage_of == "pre" else "its upstream"
            raise ProtocolError(
                f"{self.stage_of} step {self.ref} returns {returns.describe()}, named like {where}, "
                f"which is {neighbour.describe()}",
                hint="return JSON data instead" if self.stage_of == "post" else None,
            )
        return neighbour

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> UserArgs:
        sig = self.signature(ctx)
        names = tuple(t.name for t in produced.tensors) if isinstance(produced, Tensors) else ()
        return UserArgs(
            ref=self.ref,
            accepts=sig.accepts,
            returns=sig.returns,
            labels_in=isinstance(upstream, Labels),
            names=names,
        )


def _short(schema: dict[str, Any], limit: int = 160) -> str:
    text = json.dumps(schema, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
