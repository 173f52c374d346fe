"""Post steps on class scores: ``softmax``, ``labels``, ``top_k`` and ``threshold``."""

from __future__ import annotations

from pydantic import Field

from chalicelib.core.errors import ProtocolError
from chalicelib.core.protocol import (
    FLOAT_TYPES,
    Figure,
    Frozen,
    Labels,
    Tensors,
    TensorSpec,
    Value,
    is_fixed,
)
from chalicelib.core.steps.base import Params, Step, StepContext


def float_output(
    upstream: Value,
    step: str,
    output: str | None,
    ranks: tuple[int, ...],
    what: str,
    shape: str,
    *,
    maps: bool = True,
) -> TensorSpec:
    """The one float output of one of ``ranks`` a post step reads (``output`` names it): ``what`` it
    holds (``class scores``) and its ``shape`` (``[batch, classes]``), for messages. With ``maps``, a
    map of known keys to scores (a ZipMap's) counts as the dense tensor it stands for."""
    if not isinstance(upstream, Tensors):
        hint = None
        if isinstance(upstream, Figure):
            hint = "a visualization step must be the last post step"
        raise ProtocolError(f"post step {step} takes {what} but receives {upstream.describe()}", hint=hint)
    views = [(t.scores_view() if maps and t.map_of is not None else t) for t in upstream.tensors]
    candidates = [
        t
        for t in views
        if t is not None
        and t.datatype in FLOAT_TYPES
        and len(t.shape) in ranks
        and (output is None or t.name == output)
    ]
    if output is not None and not candidates:
        names = ", ".join(f"{t.name}: {t.describe()}" for t in upstream.tensors)
        raise ProtocolError(f"post step {step} reads output {output!r}, but the model's outputs are: {names}")
    if len(candidates) != 1:
        described = ", ".join(f"{t.name}: {t.describe()}" for t in upstream.tensors)
        raise ProtocolError(
            f"post step {step} needs one float {shape} output of {what}, model gives {described}",
            hint=f"choose one with - {step}: {{output: NAME}}",
        )
    return candidates[0]


def scores_tensor(upstream: Value, step: str, output: str | None) -> TensorSpec:
    return float_output(upstream, step, output, (1, 2), "class scores", "[batch, classes]")


def map_keys(upstream: Value, name: str) -> tuple[str, ...] | None:
    """The keys of output ``name`` when it is a map of scores (the runtime reads them in this order)."""
    if not isinstance(upstream, Tensors):
        return None
    found = next((t for t in upstream.tensors if t.name == name), None)
    return None if found is None or found.map_of is None else found.map_of.keys


def labels_for(upstream: Value, ctx: StepContext, step: str, output: str | None) -> tuple[str, ...]:
    scores = scores_tensor(upstream, step, output)
    labels = ctx.labels
    if labels is None:
        raise ProtocolError(
            f"post step {step} needs class labels: the model has no classes",
            hint="add labels: [...] to modelport.yaml",
        )
    n_classes = scores.shape[-1]
    if isinstance(n_classes, int) and n_classes >= 0 and n_classes != len(labels):
        raise ProtocolError(
            f"post step {step} has {len(labels)} labels but model output {scores.name!r} "
            f"gives {scores.describe()} ({n_classes} class scores)"
        )
    return labels


class SoftmaxArgs(Frozen):
    """What ``SoftmaxRun`` is built from."""

    output: str
    temperature: float


class LabelsArgs(Frozen):
    """What ``LabelsRun`` is built from: the output of class scores, the labels, how many to keep."""

    scores: str
    labels: tuple[str, ...]
    top_k: int
    keys: tuple[str, ...] | None = Field(
        default=None,
        description="the output is a map per row: its scores in this key order",
        exclude_if=lambda value: value is None,
    )


class ThresholdArgs(Frozen):
    """What ``ThresholdRun`` is built from."""

    output: str
    labels: tuple[str, str]
    threshold: float
    keys: tuple[str, ...] | None = Field(
        default=None,
        description="the output is a map per row: its scores in this key order",
        exclude_if=lambda value: value is None,
    )


class SoftmaxParams(Params):
    output: str | None = Field(default=None, description="the model output of [batch, classes] logits")
    temperature: float = Field(default=1.0, ge=0.01, le=100, description="logits are divided by it first")


class Softmax(Step):
    name = "softmax"
    stage = "post"
    params_model = SoftmaxParams
    summary = "logits -> probabilities over the last axis (same shape)"
    params: SoftmaxParams

    def target(self, upstream: Value) -> TensorSpec:
        return float_output(
            upstream, self.name, self.params.output, (2,), "logits", "[batch, classes]", maps=False
        )

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.target(upstream)
        return upstream

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> SoftmaxArgs:
        return SoftmaxArgs(output=self.target(upstream).name, temperature=self.params.temperature)


class LabelsParams(Params):
    top_k: int | None = Field(default=None, ge=1, description="keep the k best classes; default all")
    output: str | None = Field(default=None, description="the model output holding class scores")


class LabelsStep(Step):
    name = "labels"
    stage = "post"
    params_model = LabelsParams
    summary = "class scores -> [{label, score}] best first"
    params: LabelsParams

    def _top_k(self) -> int | None:
        return self.params.top_k

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        labels = labels_for(upstream, ctx, self.name, self.params.output)
        k = self._top_k()
        return Labels(labels=labels, top_k=min(k, len(labels)) if k else len(labels))

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> LabelsArgs:
        assert isinstance(produced, Labels)
        scores = scores_tensor(upstream, self.name, self.params.output)
        return LabelsArgs(
            scores=scores.name,
            labels=produced.labels,
            top_k=produced.top_k,
            keys=map_keys(upstream, scores.name),
        )


class TopKParams(LabelsParams):
    top_k: int | None = Field(default=5, ge=1, description="keep the k best classes")


class TopK(LabelsStep):
    name = "top_k"
    params_model = TopKParams
    summary = "class scores -> the k best [{label, score}]"


class ThresholdParams(Params):
    threshold: float = Field(
        default=0.5, description="the second label when P(second class) >= threshold, else the first"
    )
    output: str | None = Field(default=None, description="the model output holding the scores")


class Threshold(Step):
    name = "threshold"
    stage = "post"
    params_model = ThresholdParams
    summary = "binary scores -> the decided label with its probability ([{label, score}], one per row)"
    params: ThresholdParams

    def scores(self, upstream: Value) -> TensorSpec:
        scores = float_output(
            upstream, self.name, self.params.output, (1, 2), "binary scores", "[batch] or [batch, 1 or 2]"
        )
        width = scores.shape[-1] if len(scores.shape) == 2 else 1
        if is_fixed(width) and width not in (1, 2):
            raise ProtocolError(
                f"post step threshold decides between two classes but output {scores.name!r} gives "
                f"{scores.describe()} ({width} class scores)",
                hint="use labels or top_k for more classes",
            )
        return scores

    def apply(self, upstream: Value, ctx: StepContext) -> Value:
        self.scores(upstream)
        if ctx.labels is None or len(ctx.labels) != 2:
            got = "none" if ctx.labels is None else f"{len(ctx.labels)}"
            raise ProtocolError(
                f"post step threshold needs two labels (negative first, positive second), got {got}",
                hint="add labels: [negative, positive] to modelport.yaml",
            )
        return Labels(labels=ctx.labels, top_k=1)

    def run_args(self, upstream: Value, produced: Value, ctx: StepContext) -> ThresholdArgs:
        assert isinstance(produced, Labels) and len(produced.labels) == 2
        negative, positive = produced.labels
        name = self.scores(upstream).name
        return ThresholdArgs(
            output=name,
            labels=(negative, positive),
            threshold=self.params.threshold,
            keys=map_keys(upstream, name),
        )
