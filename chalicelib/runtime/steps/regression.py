"""The ``regression`` post step at runtime: one rounded prediction per row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.core.steps.regression import RegressionArgs
from chalicelib.runtime.steps.base import StepCall


class RegressionRun:
    """One prediction per row -> ``[{prediction, unit}]``, rounded to ``decimals``."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> RegressionRun:
        """Built from the arguments the config file records (``RegressionArgs``)."""
        a = RegressionArgs.model_validate(args)
        return cls(a.output, a.decimals, a.unit)

    def __init__(self, name: str, decimals: int | None, unit: str | None) -> None:
        self.name = name
        self.decimals = decimals
        self.unit = unit

    def __call__(self, outputs: Mapping[str, Any], inv: StepCall | None = None) -> list[dict[str, Any]]:
        values = np.asarray(outputs[self.name], dtype=np.float64)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ValueError(f"output {self.name!r} has shape {list(values.shape)}, expected [batch]")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"output {self.name!r} holds NaN or infinity")
        unit = {} if self.unit is None else {"unit": self.unit}
        digits = self.decimals
        # Python's round is correctly rounded in decimal (numpy's scales by 10**n first: 2.675 -> 2.68).
        return [
            {"prediction": float(v) if digits is None else round(float(v), digits), **unit} for v in values
        ]


def predictions_of(value: Any, name: str | None) -> npt.NDArray[np.float64]:
    """The per-row numbers of a regression result or of output ``name``."""
    rows = [row["prediction"] for row in value] if name is None else value[name]
    predictions: npt.NDArray[np.float64] = np.asarray(rows, dtype=np.float64).reshape(-1)
    return predictions
