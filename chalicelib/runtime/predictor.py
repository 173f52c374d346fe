"""The Python predictor contract: ``setup()`` once, a typed ``predict(...)`` per request.

The control plane never imports a user's ``predict.py``: it reads the type hints of ``predict`` from the
source (AST) and turns them into the model's contract. Only the container imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BasePredictor:
    """Subclass this in ``predict.py``; annotate every parameter of ``predict`` and its return type."""

    def setup(self) -> None:
        """Load weights and warm caches once per container."""

    def predict(self, **inputs: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class InputSpec:
    default: Any = ...
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None


def Input(  # noqa: N802 - reads like a type in signatures, as in Cog
    default: Any = ...,
    *,
    description: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
) -> Any:
    """Describe one ``predict`` parameter: default, bounds and text shown in the OpenAPI document."""
    return InputSpec(default, description, ge, le, min_length, max_length)


class Image(bytes):
    """Encoded image bytes (PNG/JPEG/WebP) as an argument or a result."""


class File(bytes):
    """Opaque file bytes as an argument or a result."""
