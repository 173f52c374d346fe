"""The ``text`` pre step at runtime: a string property cleaned and length-checked."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from chalicelib.core.steps.text import TextArgs, TextStep
from chalicelib.runtime.codecs import (
    invalid,
    json_type,
    pointer,
)
from chalicelib.runtime.steps.base import StepCall

_SPACE = re.compile(r"\s+")


class TextRun:
    """A JSON object's string property, cleaned: Unicode normalization, control and zero-width
    characters removed, white space collapsed and stripped, lowercased; then its length is checked
    (or cut, with ``truncate``). Problems are 400s pointing at the property."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> TextRun:
        """Built from the arguments the config file records (``TextArgs``)."""
        a = TextArgs.model_validate(args)
        return cls(TextStep(a.params), a.field, a.min_length, a.max_length)

    def __init__(self, step: TextStep, field: str, low: int, high: int | None) -> None:
        self.p = step.params
        self.field = field
        self.low = low
        self.high = high

    def clean(self, text: str) -> str:
        p = self.p
        if p.normalize != "none":
            text = unicodedata.normalize(p.normalize, text)
        if p.remove_control:
            text = "".join(
                " " if ch in "\t\n\r\v\f" else ch
                for ch in text
                if ch in "\t\n\r\v\f" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
            )
        if p.collapse_whitespace:
            text = _SPACE.sub(" ", text)
        if p.strip:
            text = text.strip()
        if p.lowercase:
            text = text.lower()
        return text

    def __call__(self, doc: Any, inv: StepCall | None = None) -> Any:
        if not isinstance(doc, dict):
            raise invalid(f"expected a JSON object with {self.field!r}, got {json_type(doc)}")
        if self.field not in doc:
            return doc  # an optional property, left out
        where = pointer("", self.field)
        value = doc[self.field]
        if not isinstance(value, str):
            raise invalid(f"expected string, got {json_type(value)}", where)
        text = self.clean(value)
        if len(text) < self.low:
            what = "is empty" if not text else f"is {len(text)} character(s) long"
            raise invalid(f"{what} after cleaning; at least {self.low} character(s) are needed", where)
        if self.high is not None and len(text) > self.high:
            if not self.p.truncate:
                raise invalid(f"is longer than {self.high} characters after cleaning ({len(text)})", where)
            text = text[: self.high].rstrip() if self.p.strip else text[: self.high]
        return {**doc, self.field: text}
