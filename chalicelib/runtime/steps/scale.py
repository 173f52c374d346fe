"""The ``scale`` pre step at runtime: ``(x - mean) / std`` over the last axis."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from chalicelib.core.steps.scale import ScaleArgs
from chalicelib.runtime.codecs import (
    invalid,
)
from chalicelib.runtime.steps.base import StepCall


class ScaleRun:
    """``(x - mean) / std`` over the last axis of the one tensor, in its dtype."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ScaleRun:
        """Built from the arguments the config file records (``ScaleArgs``)."""
        a = ScaleArgs.model_validate(args)
        return cls(a.input, a.mean, a.std)

    def __init__(self, name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.name = name
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    def __call__(self, tensors: Mapping[str, Any], inv: StepCall | None = None) -> dict[str, Any]:
        x = np.asarray(tensors[self.name])
        if x.shape[-1:] != self.mean.shape:
            raise invalid(f"expected {len(self.mean)} features to standardize, got shape {list(x.shape)}")
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = ((x - self.mean) / self.std).astype(x.dtype, copy=False)
        if not np.all(np.isfinite(scaled)):
            raise invalid(f"values are too large to standardize in {x.dtype} (they overflow to infinity)")
        return {**tensors, self.name: scaled}
