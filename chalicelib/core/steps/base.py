"""The processing-step interface shared by every family: parameters, the step, its context.

A step is known to the control plane by what it does to the *protocol*: which value it accepts, which it
produces, which parameters it takes and which packages its runtime needs. Running a step on real data is
the runtime's job (``chalicelib/runtime/steps``); both sides share the parameter models defined here.

Stages: ``pre`` steps go from the request to the model, ``post`` steps from the model to the response.
Visualization steps are post steps that produce a ``Figure`` (a PNG travelling with the structured value
it pictures); nothing can follow them.

At config time each step also resolves its run arguments (``Step.run_args``: tensor names, feature order,
labels, chart titles...) into a ``BoundStep`` that the model config file records (``steps``);
the runtime builds its run half from them by the step's name, without replaying the chain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.core.errors import ProtocolError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import (
    Figure,
    Frozen,
    Json,
    Tensors,
    TensorSpec,
    Value,
)

Stage = Literal["pre", "post"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- user steps' types


class UserType(Frozen):
    """What a user step's parameter or return annotation says it takes or gives.

    ``json``: JSON data matching ``json_schema``; ``tensors``: ``dict[str, np.ndarray]`` named like the
    model's inputs (pre) or outputs (post); ``tensor``: one ``np.ndarray`` (a one-tensor neighbour)."""

    kind: Literal["json", "tensor", "tensors"]
    json_schema: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "json":
            return Json(json_schema=self.json_schema).describe()
        return "one ndarray" if self.kind == "tensor" else "dict[str, ndarray]"


class UserSignature(Frozen):
    """A user step's types, read from its annotations at config time (``chalicelib/inspect/steps.py``).
    ``None`` on either side: not annotated, so that side bridges its neighbour (see ``UserStep``)."""

    ref: str
    accepts: UserType | None
    returns: UserType | None


@dataclass(frozen=True)
class StepContext:
    """What a step may know of the model it is chained to."""

    native: NativeContract
    labels: tuple[str, ...] | None  # from the config, else the model's classes
    user_types: Mapping[str, UserSignature] = field(default_factory=dict)
    request: Value | None = None  # the public request; known to post steps
    model: str = ""  # the model's name: the default title of a picture

    def single_input(self, step: str) -> TensorSpec:
        inputs = self.native.inputs
        if not isinstance(inputs, Tensors):
            raise ProtocolError(
                f"pre step {step} produces tensors but the {self.native.framework} model takes "
                f"{inputs.describe()}"
            )
        if len(inputs.tensors) != 1:
            names = ", ".join(repr(t.name) for t in inputs.tensors)
            raise ProtocolError(
                f"pre step {step} produces one tensor but the model has {len(inputs.tensors)} "
                f"inputs ({names})",
                hint="remove the pre step and send every input tensor",
            )
        return inputs.tensors[0]


class Step(ABC):
    """A built-in processing step, bound to its parameters."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    params_model: ClassVar[type[Params]]
    packages: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str]

    def __init__(self, params: Params) -> None:
        self.params = params

    def public_input(self, ctx: StepContext) -> Value | None:
        """What a request must carry when this step comes first; ``None``: it cannot come first."""
        return None

    @abstractmethod
    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        """The value this step produces from ``upstream``; raises ProtocolError if it cannot take it."""

    @abstractmethod
    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> Frozen:
        """What this step's run half (``chalicelib/runtime/steps``) is built from, resolved once here;
        ``produced`` is what ``apply`` made of ``upstream``."""

    def refuse(self, upstream: Value, wants: str) -> ProtocolError:
        hint = None
        if isinstance(upstream, Figure):
            hint = f"{upstream.chart} draws a picture: a visualization step must be the last post step"
        return ProtocolError(
            f"{self.stage} step {self.name} takes {wants} but receives {upstream.describe()}", hint=hint
        )


class BoundStep(Frozen):
    """One step of the chain with its run arguments, as the model config file records them."""

    stage: Stage
    step: str = Field(description="the built-in step's name, or 'user' for user code")
    args: dict[str, Any] = Field(description="the arguments its runtime is built from (Step.run_args)")


def title_of(params: Params, ctx: StepContext) -> str:
    """A picture's title: its ``title`` parameter, else the model's name."""
    title: str | None = getattr(params, "title", None)
    return title or ctx.model
