"""User steps at runtime: the user's function with its annotations enforced."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from chalicelib.core.steps import UserType
from chalicelib.core.steps.user import UserArgs
from chalicelib.runtime.codecs import (
    Problems,
    check_schema,
    to_jsonable,
)
from chalicelib.runtime.loaders import ModelLoadError, import_user_file
from chalicelib.runtime.steps.base import StepCall


def user_function(model_dir: Path, ref: str) -> Callable[[Any], Any]:
    rel, _, name = ref.partition(":")
    fn = getattr(import_user_file(model_dir, rel), name, None)
    if not callable(fn):
        raise ModelLoadError(f"user step {ref}: {rel} defines no function {name}")
    return fn  # type: ignore[no-any-return]


def user_run(args: Mapping[str, Any], model_dir: Path) -> tuple[str, UserRun]:
    """The user step ``args`` record (``UserArgs``), its function imported from ``model_dir``; and its ref."""
    a = UserArgs.model_validate(args)
    fn = user_function(model_dir, a.ref)
    return a.ref, UserRun(fn, a.labels_in, a.accepts, a.returns, a.names)


class UserRun:
    """A user function with its annotations enforced: it receives labels and boxes in their response
    form (``[{label, score}]``), one ``ndarray`` when it takes one, and what it returns is checked
    against its return type (a mismatch is the step's failure, a 502 naming it)."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        labels_in: bool,
        accepts: UserType | None,
        returns: UserType | None,
        names: tuple[str, ...],
    ) -> None:
        self.fn = fn
        self.labels_in = labels_in
        self.one_in = accepts is not None and accepts.kind == "tensor"
        self.returns = returns
        self.names = names  # the tensors a tensor-typed return is named like

    def __call__(self, value: Any, inv: StepCall | None = None) -> Any:
        if self.labels_in:
            value = [[{"label": label, "score": score} for label, score in row] for row in value]
        elif self.one_in:
            (value,) = value.values()
        result = self.fn(value)
        kind = self.returns.kind if self.returns is not None else None
        if kind == "json":
            assert self.returns is not None
            problems = Problems()
            result = check_schema(to_jsonable(result), self.returns.json_schema, "", problems)
            if problems:
                item = problems.items[0]
                raise TypeError(
                    "returned a value that does not match its return type: "
                    f"{item['pointer'] or '/'}: {item['message']}"
                )
        elif kind == "tensor":
            result = {self.names[0]: np.asarray(result)}
        elif kind == "tensors":
            if not isinstance(result, Mapping):
                raise TypeError(f"returned {type(result).__name__}, not a dict of arrays")
            missing = [n for n in self.names if n not in result]
            if missing:
                raise TypeError(f"returned no {', '.join(map(repr, missing))}")
        return result
