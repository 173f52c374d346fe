"""The ``tabular`` pre step at runtime: records, rows or CSV to one float matrix."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.core.steps.tabular import TabularArgs
from chalicelib.runtime.codecs import (
    Problems,
    RequestError,
    invalid,
    json_type,
    object_with,
    pointer,
)
from chalicelib.runtime.steps.base import StepCall, Table


def _number(value: Any, where: str, problems: Problems) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(f"expected a number, got {json_type(value)}", pointer=where)
        return 0.0
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer
        problems.add("is too large for a 64-bit float", pointer=where)
        return 0.0
    if not math.isfinite(number):
        problems.add("must be a finite number (no NaN or infinity)", pointer=where)
        return 0.0
    return number


_KINDS = {"bool": "bool", "bytes": "string"}


def _kind(dtype: str) -> str:
    """How a request spells a value of numpy type ``dtype``: float, int, bool or string."""
    if dtype in _KINDS:
        return _KINDS[dtype]
    return "float" if dtype.startswith("float") else "int"


def _integer(value: Any, where: str, problems: Problems, dtype: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        got = repr(value) if isinstance(value, float) else json_type(value)
        problems.add(f"expected an integer ({dtype}), got {got}", pointer=where)
        return 0
    info = np.iinfo(dtype)
    if not info.min <= number <= info.max:
        problems.add(f"{number} does not fit {dtype} (from {info.min} to {info.max})", pointer=where)
        return 0
    return number


def _typed(kind: str, dtype: str, value: Any, where: str, problems: Problems) -> Any:
    """A JSON value of one feature of ``kind``; a wrong type is a problem at ``where``."""
    if kind == "float":
        return _number(value, where, problems)
    if kind == "int":
        return _integer(value, where, problems, dtype)
    if kind == "bool":
        if not isinstance(value, bool):
            problems.add(f"expected true or false, got {json_type(value)}", pointer=where)
        return bool(value) if isinstance(value, bool) else False
    if not isinstance(value, str):
        problems.add(f"expected a string, got {json_type(value)}", pointer=where)
        return ""
    return value


_CSV_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _typed_cell(kind: str, dtype: str, cell: str, line: int, column: str, problems: Problems) -> Any:
    """A CSV cell of one feature of ``kind`` (text as it is; numbers, integers and booleans parsed)."""
    if kind == "string":
        return cell
    if kind == "bool":
        if cell.lower() not in _CSV_BOOLS:
            problems.add(f"{cell!r} is not true or false", row=line, column=column)
            return False
        return _CSV_BOOLS[cell.lower()]
    try:
        value: Any = int(cell) if kind == "int" else float(cell)
    except ValueError:
        what = "an integer" if kind == "int" else "a number"
        problems.add(f"{cell!r} is not {what}" if cell else "empty value", row=line, column=column)
        return 0
    if kind == "int":
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            problems.add(f"{value} does not fit {dtype}", row=line, column=column)
            return 0
    elif not math.isfinite(value):
        problems.add("must be a finite number (no NaN or infinity)", row=line, column=column)
    return value


class TabularRun:
    """Records, rows or CSV -> one float matrix in the model's feature order. Categorical features
    take their names (``categories``) and become the numbers they map to."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> TabularRun:
        """Built from the arguments the config file records (``TabularArgs``)."""
        a = TabularArgs.model_validate(args)
        columns = None if a.columns is None else tuple((c.input, c.dtype, c.rank) for c in a.columns)
        return cls(a.features, a.input, a.dtype, a.categories, a.rows, columns)

    def __init__(
        self,
        features: tuple[str, ...],
        input_name: str,
        dtype: npt.DTypeLike,
        categories: Mapping[str, Mapping[str, float]] | None = None,
        rows: int | None = None,
        columns: tuple[tuple[str, str, int], ...] | None = None,
    ) -> None:
        """``columns``: (input, numpy dtype, rank) per feature, for a model taking one input per column."""
        self.rows = rows
        """The model takes exactly this many rows (a fixed batch), or any number."""
        self.columns = columns
        self.features = features
        self.index = {name: j for j, name in enumerate(features)}
        self.input_name = input_name
        dtypes = [c[1] for c in columns] if columns else [str(np.dtype(dtype).name)] * len(features)
        self.dtypes = tuple("bytes" if d in ("bytes", "bytes_", "object") else d for d in dtypes)
        self.kinds = tuple(_kind(d) for d in self.dtypes)
        self.numeric = all(k == "float" for k in self.kinds)
        """Every feature is a number: one float64 matrix, checked and cast at once (the fast path)."""
        dtype = "float64" if not self.numeric else dtype
        self.dtype = np.dtype(dtype)
        self.categories = {self.index[n]: dict(m) for n, m in (categories or {}).items()}
        self.category_names = {name for m in self.categories.values() for name in m}
        info = np.iinfo(self.dtype) if self.dtype.kind in "iu" else None
        if info is None and self.dtype.kind == "f" and self.dtype.itemsize < 8:
            info = np.finfo(self.dtype)  # type: ignore[assignment]
        self._range = None if info is None else (float(info.min), float(info.max))

    def __call__(self, table: Table, inv: StepCall | None = None) -> dict[str, npt.NDArray[Any]]:
        matrix = self._from_csv(table.csv) if table.csv is not None else self._from_json(table.json)
        if self.rows is not None and len(matrix) != self.rows:
            raise RequestError(
                f"the model takes exactly {self.rows} rows at a time; got {len(matrix)}",
                errors=[{"pointer": "", "message": f"{len(matrix)} rows, expected {self.rows}"}],
            )
        if self.numeric:
            if inv is not None:
                inv.table = (self.features, matrix)
            if self.columns is None:
                return {self.input_name: self._cast(matrix)}
            matrix = self._cast(matrix)
        elif self.columns is None:  # one matrix of integers, booleans or text
            return {self.input_name: _as(matrix, self.dtypes[0], self.features)}
        inputs = {}
        for j, (name, dtype, rank) in enumerate(self.columns):
            column = _as(matrix[:, j], dtype, self.features[j : j + 1])
            inputs[name] = column.reshape(-1, 1) if rank == 2 else column
        return inputs

    def _cast(self, matrix: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The matrix in the model's dtype; a value that does not fit it (1e39 for float32, which would
        become infinity and NaN scores) is the request's mistake, a 400. The cells are finite float64
        already: two reductions, no cast to look at (a few µs for one row)."""
        if self._range is not None and matrix.size:
            low, high = self._range
            if matrix.min() < low or matrix.max() > high:
                i, j = (int(k) for k in np.argwhere((matrix < low) | (matrix > high))[0])
                name, dtype = self.features[j], self.dtype.name
                raise RequestError(
                    f"row {i + 1}, {name}: {matrix[i, j]:g} does not fit {dtype}",
                    errors=[{"row": i + 1, "column": name, "message": f"does not fit {dtype}"}],
                )
        return matrix.astype(self.dtype, copy=False)

    def _category(self, j: int, value: Any, problems: Problems, **where: Any) -> float:
        mapping = self.categories[j]
        if isinstance(value, str) and value in mapping:
            return mapping[value]
        allowed = ", ".join(repr(k) for k in mapping)
        got = repr(value) if isinstance(value, str) else json_type(value)
        problems.add(f"expected one of {allowed}, got {got}", **where)
        return 0.0

    def _cell(self, j: int, value: Any, where: str, problems: Problems) -> Any:
        if j in self.categories:
            return self._category(j, value, problems, pointer=where)
        if self.numeric:
            return _number(value, where, problems)
        return _typed(self.kinds[j], self.dtypes[j], value, where, problems)

    def _empty(self, rows: int) -> npt.NDArray[Any]:
        return np.zeros((rows, len(self.features)), dtype=np.float64 if self.numeric else object)

    def _from_json(self, doc: Any) -> npt.NDArray[Any]:
        key, items = object_with(doc, ("records", "rows"), "the request")
        base = pointer("", key)
        if not isinstance(items, list):
            raise invalid(f"expected an array of {key}, got {json_type(items)}", base)
        if not items:
            raise invalid(f"send at least one {key[:-1]}", base)
        n = len(self.features)
        matrix = self._empty(len(items))
        problems = Problems()
        for i, item in enumerate(items):
            where = pointer(base, i)
            if key == "records":
                if not isinstance(item, dict):
                    problems.add(f"expected an object of features, got {json_type(item)}", pointer=where)
                    continue
                for name, j in self.index.items():
                    if name in item:
                        matrix[i, j] = self._cell(j, item[name], pointer(where, name), problems)
                    else:
                        problems.add("missing feature", pointer=pointer(where, name))
                for name in item:
                    if name not in self.index:
                        problems.add(
                            f"unknown feature (features: {', '.join(self.features)})",
                            pointer=pointer(where, name),
                        )
            elif not isinstance(item, list) or len(item) != n:
                got = f"{len(item)} values" if isinstance(item, list) else json_type(item)
                what = "values" if self.categories else "numbers"
                problems.add(
                    f"expected an array of {n} {what} ({', '.join(self.features)}), got {got}", pointer=where
                )
            else:
                for j, value in enumerate(item):
                    matrix[i, j] = self._cell(j, value, pointer(where, j), problems)
        problems.check()
        return matrix

    def _is_header(self, cells: list[str]) -> bool:
        """Any cell that is neither a number nor a category name makes the first row a header; with
        text features, a first row of exactly the feature names."""
        if not self.numeric:
            return sorted(cells) == sorted(self.features)
        return not all(_is_float(c) or c in self.category_names for c in cells)

    def _from_csv(self, text: str) -> npt.NDArray[Any]:
        """CSV with an optional header row; ``row`` in errors counts lines as a spreadsheet does."""
        reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
        try:
            lines = [
                (reader.line_num, [c.strip() for c in row]) for row in reader if any(c.strip() for c in row)
            ]
        except csv.Error as exc:
            raise RequestError(
                f"malformed CSV at row {reader.line_num}: {exc}",
                errors=[{"row": reader.line_num, "message": str(exc)}],
            ) from None
        if not lines:
            raise RequestError("the CSV has no rows", errors=[{"row": 1, "message": "no rows"}])
        problems = Problems()
        columns = list(range(len(self.features)))  # CSV column of each feature
        names = list(self.features)
        first_line, first = lines[0]
        if self._is_header(first):  # a header row: columns are matched by name
            lines = lines[1:]
            columns = [first.index(name) if name in first else -1 for name in self.features]
            names = first
            for name, col in zip(self.features, columns, strict=True):
                if col < 0:
                    problems.add("missing column", row=first_line, column=name)
            for cell in first:
                if cell not in self.index:
                    problems.add(
                        f"unknown column (features: {', '.join(self.features)})", row=first_line, column=cell
                    )
            for cell in sorted({c for c in first if first.count(c) > 1}):
                problems.add("column appears more than once", row=first_line, column=cell)
            problems.check()
            if not lines:
                raise RequestError(
                    "the CSV has a header but no data rows",
                    errors=[{"row": first_line, "message": "no data rows"}],
                )
        width = len(names)
        matrix = self._empty(len(lines))
        for i, (line, cells) in enumerate(lines):
            if len(cells) != width:
                problems.add(f"expected {width} values ({', '.join(names)}), got {len(cells)}", row=line)
                continue
            for j, col in enumerate(columns):
                cell = cells[col]
                if j in self.categories:
                    matrix[i, j] = self._category(j, cell, problems, row=line, column=self.features[j])
                    continue
                if not self.numeric:
                    kind, dtype = self.kinds[j], self.dtypes[j]
                    matrix[i, j] = _typed_cell(kind, dtype, cell, line, self.features[j], problems)
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    problems.add(
                        f"{cell!r} is not a number" if cell else "empty value",
                        row=line,
                        column=self.features[j],
                    )
                    continue
                if not math.isfinite(value):
                    problems.add(
                        "must be a finite number (no NaN or infinity)", row=line, column=self.features[j]
                    )
                matrix[i, j] = value
        problems.check()
        return matrix


def _as(values: npt.NDArray[Any], dtype: str, features: tuple[str, ...]) -> npt.NDArray[Any]:
    """Checked Python values as the model's element type (text as an object array of str); a number
    past a float type's range (1e39 for float32) is the request's mistake, not an infinity."""
    if dtype == "bytes":
        return np.asarray(values, dtype=object).astype(str).astype(object)
    array = np.asarray(values.tolist(), dtype=np.float64 if dtype.startswith("float") else dtype)
    if dtype.startswith("float") and array.size:
        limit = float(np.finfo(dtype).max)
        if np.abs(array).max() > limit:
            name = features[0] if len(features) == 1 else "a feature"
            raise RequestError(
                f"{name}: a value does not fit {dtype}",
                errors=[{"column": name, "message": f"does not fit {dtype}"}],
            )
    return array.astype(dtype, copy=False)


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
