"""Gradient-boosting inspectors that read the saved files themselves: XGBoost JSON/UBJSON and
LightGBM model text. Neither library is imported, so neither needs to be installed.

Both parsers run on untrusted files in the control plane, so every count a file declares is budgeted by
the file's own size before anything is allocated: a UBJSON container may claim at most as many elements as
bytes remain, the whole document at most ``_ELEMENTS_PER_BYTE`` elements per byte, nesting at most
``MAX_DEPTH`` levels; a JSON document at most one container per ``_JSON_BYTES_PER_CONTAINER`` bytes;
class, target and feature counts at most one per byte of the file, LightGBM header lines at most
``_MAX_LINE`` bytes. A file over budget is refused with ``ArtifactError`` naming it and the budget.

Outputs describe what the native booster's ``predict`` returns (not the sklearn wrappers):
``binary:logistic``/``binary`` give P(class 1) per row as ``probability`` (batch,), ``multi:softprob``/
``multiclass`` give ``probabilities`` (batch, num_class), ``multi:softmax``/``binary:hinge`` a class
index as a float ``label``, ranking objectives a ``score`` and everything else a ``prediction``.
XGBoost computes in float32 (FP32); LightGBM returns float64 (FP64).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from chalicelib.core.errors import ArtifactError
from chalicelib.core.native import NativeContract, Scalar, Task
from chalicelib.core.protocol import DataType, Dim, Tensors, TensorSpec

# --------------------------------------------------------------------------- UBJSON

MAX_DEPTH = 64
_ELEMENTS_PER_BYTE = 2
_JSON_BYTES_PER_CONTAINER = 16
_MAX_LINE = 16 * 1024 * 1024
_MAX_HEADER_LINES = 10_000


class BudgetExceeded(ValueError):
    """A file declares more than its size can hold."""


_NUMBERS = {"i": "b", "U": "B", "I": "h", "l": "i", "L": "q", "d": "f", "D": "d"}
_INTS = frozenset("iUIlL")


class _Ubj:
    """The UBJSON subset XGBoost writes: big-endian numbers, optimized ``$``/``#`` containers."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.depth = 0
        self.elements = 0
        self.budget = _ELEMENTS_PER_BYTE * len(data) + 64

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"unexpected end of data at byte {self.pos}")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def peek(self) -> str:
        return chr(self.data[self.pos]) if self.pos < len(self.data) else ""

    def marker(self) -> str:
        while (m := chr(self.take(1)[0])) == "N":  # N is a no-op
            pass
        return m

    def length(self, m: str | None = None) -> int:
        m = m or self.marker()
        n = self.value(m) if m in _INTS else -1
        if n < 0:
            raise ValueError(f"bad length at byte {self.pos}")
        remaining = len(self.data) - self.pos
        if n > remaining:  # even zero-byte T/F/Z elements are budgeted at one a byte
            raise BudgetExceeded(
                f"unexpected end of data: length {n} at byte {self.pos} exceeds the {remaining} bytes left"
            )
        return int(n)

    def charge(self, n: int) -> None:
        self.elements += n
        if self.elements > self.budget:
            raise BudgetExceeded(
                f"more than {self.budget} elements ({_ELEMENTS_PER_BYTE} per byte of the file) "
                f"by byte {self.pos}"
            )

    def value(self, m: str) -> Any:
        if m in _NUMBERS:
            fmt = ">" + _NUMBERS[m]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if m in "SH":  # H: a high-precision number, kept as its text
            return self.take(self.length()).decode()
        if m == "C":
            return self.take(1).decode()
        if m in "TFZ":
            return {"T": True, "F": False, "Z": None}[m]
        if m in "[{":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise BudgetExceeded(f"nested more than {MAX_DEPTH} levels deep at byte {self.pos - 1}")
            try:
                return self.container(m == "{")
            finally:
                self.depth -= 1
        raise ValueError(f"unknown marker {m!r} at byte {self.pos - 1}")

    def container(self, keyed: bool) -> Any:
        typ: str | None = None
        count: int | None = None
        if self.peek() == "$":
            self.pos += 1
            typ = chr(self.take(1)[0])
            if self.peek() != "#":
                raise ValueError(f"typed container without a count at byte {self.pos}")
        if self.peek() == "#":
            self.pos += 1
            count = self.length()
            self.charge(count)
        if typ in _NUMBERS and count is not None and not keyed:
            fmt = _NUMBERS[typ]
            return list(struct.unpack(f">{count}{fmt}", self.take(count * struct.calcsize(fmt))))
        items: list[Any] = []
        fields: dict[str, Any] = {}
        while count is None or len(fields if keyed else items) < count:
            m = self.marker() if keyed or typ is None else typ
            if count is None and m == ("}" if keyed else "]"):
                break
            if count is None:
                self.charge(1)
            if keyed:
                key = self.take(self.length(m)).decode()
                fields[key] = self.value(typ or self.marker())
            else:
                items.append(self.value(m))
        return fields if keyed else items


def decode_ubjson(data: bytes) -> Any:
    """Decode one UBJSON document; raises ValueError on anything malformed."""
    reader = _Ubj(data)
    try:
        doc = reader.value(reader.marker())
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise ValueError(str(exc)) from None
    if data[reader.pos :].strip(b"N"):
        raise ValueError(f"trailing data at byte {reader.pos}")
    return doc


# --------------------------------------------------------------------------- shared


def _int(value: Any, what: str, rel: str, size: int) -> int:
    """A count the file declares; at most one per byte of the file, since each needs some of it."""
    try:
        n = int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise ArtifactError(
            f"{rel}: {what} is {_short(value)}, not a number", hint="save the model again"
        ) from None
    if n > size:
        raise ArtifactError(
            f"{rel}: {what}={n} exceeds the file's budget of one per byte ({size} bytes)",
            hint="save the model again",
        )
    return n


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value[:80])
    return text if len(text) <= 80 else text[:79] + "…"


def _loads_json(raw: bytes) -> Any:
    """``json.loads`` once the container count fits the budget (empty ``[]``s cost ~20x their bytes)."""
    budget = len(raw) // _JSON_BYTES_PER_CONTAINER + 1024
    containers = raw.count(b"[") + raw.count(b"{")  # an upper bound: brackets in strings count too
    if containers > budget:
        raise BudgetExceeded(
            f"{containers} arrays/objects exceed the budget of {budget} "
            f"(one per {_JSON_BYTES_PER_CONTAINER} bytes)"
        )
    return json.loads(raw)


def _contract(
    framework: str,
    *,
    task: Task,
    head: str,
    objective: str,
    datatype: DataType,
    n_features: int,
    num_class: int,
    num_target: int,
    names: tuple[str, ...] | None,
    metadata: dict[str, str],
) -> NativeContract:
    shape: tuple[Dim, ...] = ("batch",) if num_target <= 1 else ("batch", num_target)
    if head == "probabilities":
        shape = ("batch", num_class)
    classes: tuple[Scalar, ...] | None = None
    if task == "classifier":
        classes = tuple(range(max(num_class, 2)))
    return NativeContract(
        framework=framework,
        task=task,
        model_type=objective or None,
        inputs=Tensors(tensors=(TensorSpec(name="input", datatype=datatype, shape=("batch", n_features)),)),
        outputs=Tensors(tensors=(TensorSpec(name=head, datatype=datatype, shape=shape),)),
        feature_names=names,
        classes=classes,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- XGBoost


def _xgb_task(objective: str) -> tuple[Task, str]:
    family = objective.split(":", 1)[0]
    special: dict[str, tuple[Task, str]] = {
        "binary:logistic": ("classifier", "probability"),
        "binary:logitraw": ("classifier", "margin"),
        "binary:hinge": ("classifier", "label"),
        "multi:softprob": ("classifier", "probabilities"),
        "multi:softmax": ("classifier", "label"),
    }
    if objective in special:
        return special[objective]
    if family == "rank":
        return "ranker", "score"
    if family in ("reg", "survival", "count"):
        return "regressor", "prediction"
    return "unknown", "prediction"


def inspect_xgboost(path: Path, rel: str) -> NativeContract:
    ubj = path.suffix.lower() == ".ubj"
    hint = "save it with booster.save_model('model.json') or 'model.ubj'"
    kind = "UBJSON" if ubj else "JSON"
    try:
        raw = path.read_bytes()
        doc = decode_ubjson(raw) if ubj else _loads_json(raw)
    except BudgetExceeded as exc:
        raise ArtifactError(f"{rel} exceeds the parsing budget of an XGBoost {kind} model: {exc}") from None
    except RecursionError:
        raise ArtifactError(f"{rel}: XGBoost {kind} nested too deeply", hint=hint) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{rel} is not a valid XGBoost {kind} model: {exc}", hint=hint) from None
    size = len(raw)
    learner = doc.get("learner") if isinstance(doc, dict) else None
    if not isinstance(learner, dict):
        raise ArtifactError(f"{rel} is not an XGBoost model (no top-level 'learner')", hint=hint)
    param = learner.get("learner_model_param")
    if not isinstance(param, dict) or "num_feature" not in param:
        raise ArtifactError(f"{rel} lacks learner.learner_model_param.num_feature", hint=hint)
    n_features = _int(param["num_feature"], "num_feature", rel, size)
    num_class = _int(param.get("num_class", 0), "num_class", rel, size)
    num_target = _int(param.get("num_target", 1), "num_target", rel, size)
    objective_doc = learner.get("objective")
    objective = str(objective_doc.get("name", "")) if isinstance(objective_doc, dict) else ""
    task, head = _xgb_task(objective)
    names = tuple(str(n) for n in learner.get("feature_names") or ()) or None
    if names is not None and len(names) != n_features:
        raise ArtifactError(f"{rel} names {len(names)} features but has num_feature={n_features}", hint=hint)
    metadata = {"objective": objective, "num_class": str(num_class), "format": path.suffix[1:]}
    types = [str(t) for t in learner.get("feature_types") or ()]
    if types:
        metadata["feature_types"] = ",".join(types)
    booster = learner.get("gradient_booster")
    if isinstance(booster, dict) and booster.get("name"):
        metadata["booster"] = str(booster["name"])
    version = doc.get("version")
    if isinstance(version, list) and version:
        metadata["xgboost_version"] = ".".join(str(v) for v in version[:4])
    return _contract(
        "xgboost",
        task=task,
        head=head,
        objective=objective,
        datatype="FP32",
        n_features=n_features,
        num_class=num_class,
        num_target=num_target,
        names=names,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- LightGBM

_LGB_REGRESSION = {
    "regression", "regression_l1", "huber", "fair", "poisson", "quantile", "mape", "gamma",
    "tweedie", "cross_entropy", "cross_entropy_lambda",
}  # fmt: skip


def _lgb_task(name: str) -> tuple[Task, str]:
    if name == "binary":
        return "classifier", "probability"
    if name in ("multiclass", "multiclassova"):
        return "classifier", "probabilities"
    if name in ("lambdarank", "rank_xendcg"):
        return "ranker", "score"
    if name in _LGB_REGRESSION:
        return "regressor", "prediction"
    return "unknown", "prediction"


def inspect_lightgbm(path: Path, rel: str) -> NativeContract:
    hint = "save it with booster.save_model('model.txt')"
    header: dict[str, str] = {}
    size = path.stat().st_size
    with path.open("rb") as fh:
        if fh.readline(64).strip() != b"tree":
            raise ArtifactError(
                f"{rel} is not a LightGBM model file (its first line must be 'tree')", hint=hint
            )
        for count in range(_MAX_HEADER_LINES + 1):
            raw = fh.readline(_MAX_LINE + 1)
            if not raw:
                break
            if len(raw) > _MAX_LINE:
                raise ArtifactError(
                    f"{rel}: a header line exceeds the parsing budget of {_MAX_LINE // (1024 * 1024)} MiB"
                )
            if count == _MAX_HEADER_LINES:
                raise ArtifactError(
                    f"{rel}: the header exceeds the parsing budget of {_MAX_HEADER_LINES} lines"
                )
            line = raw.decode(errors="replace").strip()
            if line.startswith("Tree=") or line == "end of trees" or (not line and header):
                break
            key, sep, value = line.partition("=")
            if sep:
                header[key] = value
    if "max_feature_idx" not in header:
        raise ArtifactError(f"{rel} is not a LightGBM model file (no max_feature_idx)", hint=hint)
    n_features = _int(header["max_feature_idx"], "max_feature_idx", rel, size) + 1
    num_class = _int(header.get("num_class", 1), "num_class", rel, size)
    objective = header.get("objective", "").strip()
    name = objective.split(" ", 1)[0]
    task, head = _lgb_task(name)
    names = tuple(header.get("feature_names", "").split()) or None
    if names is not None and len(names) != n_features:
        raise ArtifactError(
            f"{rel} names {len(names)} features but has max_feature_idx={n_features - 1}",
            hint=hint,
        )
    metadata = {"objective": objective or "custom", "num_class": str(num_class)}
    if "version" in header:
        metadata["format"] = header["version"]
    # feature_infos: "[min:max]" for a numeric feature, the category codes "-1:1:2:0" for a categorical one
    infos = header.get("feature_infos", "").split()
    if len(infos) == n_features:
        categorical = [
            (names[i] if names else f"Column_{i}")
            for i, info in enumerate(infos)
            if info != "none" and info[:1] != "["
        ]
        if categorical:
            metadata["categorical_features"] = ",".join(categorical)
    return _contract(
        "lightgbm",
        task=task,
        head=head,
        objective=name,
        datatype="FP64",
        n_features=n_features,
        num_class=num_class,
        num_target=1,
        names=names,
        metadata=metadata,
    )
