"""Post steps on class scores at runtime: softmax, labels and top_k, threshold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from chalicelib.core.steps.scores import LabelsArgs, SoftmaxArgs, ThresholdArgs
from chalicelib.runtime.steps.base import LabelRows, StepCall


def score_matrix(value: Any, keys: tuple[str, ...] | None) -> Any:
    """The scores ``value`` holds as a float64 array; with ``keys``, ``value`` is a map of key -> score
    (or a list of them, one per row: a ZipMap's) and becomes ``[rows, keys]`` in that order. Keys are
    compared as JSON spells them (an int64 key 2 is "2")."""
    if keys is None:
        return np.asarray(value, dtype=np.float64)
    rows = [value] if isinstance(value, Mapping) else value
    matrix = np.empty((len(rows), len(keys)), dtype=np.float64)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(
                f"row {i} of the scores is {type(row).__name__}, expected a map of {len(keys)} keys"
            )
        by_key = {str(k): v for k, v in row.items()}
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise ValueError(f"row {i} of the scores has no key {missing[0]!r}")
        matrix[i] = [float(by_key[k]) for k in keys]
    return matrix


class LabelsRun:
    """Class scores -> per row, the ``top_k`` best ``(label, score)``; scores as the model gives them."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> LabelsRun:
        """Built from the arguments the config file records (``LabelsArgs``)."""
        a = LabelsArgs.model_validate(args)
        return cls(a.scores, a.labels, a.top_k, a.keys)

    def __init__(
        self, scores: str, labels: tuple[str, ...], top_k: int, keys: tuple[str, ...] | None = None
    ) -> None:
        self.scores = scores
        self.labels = labels
        self.top_k = top_k
        self.keys = keys

    def __call__(self, outputs: Mapping[str, Any], inv: StepCall | None = None) -> LabelRows:
        scores = score_matrix(outputs[self.scores], self.keys)
        n = len(self.labels)
        if scores.ndim == 1 and n == 2:  # one probability per row: P(second class)
            scores = np.stack([1 - scores, scores], axis=1)
        elif scores.ndim == 1:
            scores = scores.reshape(-1, 1)
        if scores.ndim != 2 or scores.shape[1] != n:
            raise ValueError(
                f"output {self.scores!r} has shape {list(scores.shape)}, expected [batch, {n}] for {n} labels"
            )
        order = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
        return [
            [(self.labels[j], float(row[j])) for j in best] for row, best in zip(scores, order, strict=True)
        ]


class SoftmaxRun:
    """Logits -> probabilities over the last axis (``exp(x / T)`` normalized), in the output's dtype."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> SoftmaxRun:
        """Built from the arguments the config file records (``SoftmaxArgs``)."""
        a = SoftmaxArgs.model_validate(args)
        return cls(a.output, a.temperature)

    def __init__(self, name: str, temperature: float) -> None:
        self.name = name
        self.temperature = temperature

    def __call__(self, outputs: Mapping[str, Any], inv: StepCall | None = None) -> dict[str, Any]:
        logits = np.asarray(outputs[self.name])
        x = logits.astype(np.float64) / self.temperature
        if not np.all(np.isfinite(x)):
            raise ValueError(f"output {self.name!r} holds NaN or infinity")
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        probabilities = e / e.sum(axis=-1, keepdims=True)
        return {**outputs, self.name: probabilities.astype(logits.dtype, copy=False)}


class ThresholdRun:
    """Binary scores -> per row ``[(label, score)]``: the second label when P(second) >= threshold,
    with the probability of the label decided (P or 1 - P)."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ThresholdRun:
        """Built from the arguments the config file records (``ThresholdArgs``)."""
        a = ThresholdArgs.model_validate(args)
        return cls(a.output, a.labels, a.threshold, a.keys)

    def __init__(
        self, name: str, labels: tuple[str, ...], threshold: float, keys: tuple[str, ...] | None = None
    ) -> None:
        self.name = name
        self.negative, self.positive = labels
        self.threshold = threshold
        self.keys = keys

    def __call__(self, outputs: Mapping[str, Any], inv: StepCall | None = None) -> LabelRows:
        scores = score_matrix(outputs[self.name], self.keys)
        if scores.ndim == 2 and scores.shape[1] == 2:
            negative, positive = scores[:, 0], scores[:, 1]
        elif scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1):
            positive = scores.reshape(-1)
            negative = 1 - positive
        else:
            raise ValueError(f"output {self.name!r} has shape {list(scores.shape)}, expected [batch, 1 or 2]")
        return [
            [(self.positive, float(p))] if p >= self.threshold else [(self.negative, float(n))]
            for n, p in zip(negative, positive, strict=True)
        ]
