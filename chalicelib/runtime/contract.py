"""The native contract of a fitted scikit-learn estimator, read from its fitted attributes only.

It runs in the sandboxed probe (``chalicelib.runtime.probe``) for pickles and trusted-type ``.skops`` files,
and in process for ``.skops`` files of skops' default types only; so it imports only ``chalicelib.core``,
and numpy/sklearn lazily.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core.native import NativeContract, Scalar, Task
from chalicelib.core.probe import not_an_estimator, not_fitted
from chalicelib.core.protocol import DataType, Tensors, TensorSpec


def public_name(cls: type) -> str:
    """``sklearn.linear_model.LogisticRegression`` rather than its private defining module."""
    parts = [p for p in cls.__module__.split(".") if not p.startswith("_")]
    return ".".join([*parts, cls.__qualname__])


def _task_of(est: Any) -> Task:
    from sklearn.base import is_classifier, is_regressor

    task: Task | None
    try:
        task = "classifier" if is_classifier(est) else "regressor" if is_regressor(est) else None
    except Exception:  # objects without sklearn tags: judge by their methods below
        task = None
    if task is not None:
        return task
    if hasattr(est, "transform") and not hasattr(est, "predict"):
        return "transformer"
    return "unknown"


def _is_fitted(est: Any) -> bool:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(est)
    except NotFittedError:
        return False
    except Exception:  # not an sklearn estimator, so nothing to check
        return True
    return True


def _scalar(value: Any) -> Scalar:
    return value if isinstance(value, str | bool | int | float) else str(value)


def _label_type(kind: str) -> DataType:
    return {"b": "BOOL", "i": "INT64", "u": "INT64", "f": "FP64"}.get(kind, "BYTES")  # type: ignore[return-value]


def contract_from_estimator(est: Any, *, rel: str, fmt: str) -> NativeContract:
    """The native contract of a fitted estimator, from its fitted attributes only."""
    import numpy as np
    import sklearn
    from sklearn.pipeline import Pipeline

    if not (hasattr(est, "predict") or hasattr(est, "transform")):
        raise not_an_estimator(rel, public_name(type(est)))
    if not _is_fitted(est):
        raise not_fitted(rel)
    kind = _task_of(est)
    task: Task = kind
    final = est
    metadata = {"format": fmt, "loaded_with": f"scikit-learn {sklearn.__version__}"}
    if isinstance(est, Pipeline):
        final = est.steps[-1][1]
        task = "pipeline"
        metadata["final_step"] = public_name(type(final))
        metadata["final_task"] = kind

    n_features = getattr(est, "n_features_in_", None)
    names = getattr(est, "feature_names_in_", None)
    has_proba = hasattr(est, "predict_proba")
    classes: tuple[Scalar, ...] | None = None
    outputs: tuple[TensorSpec, ...]
    if kind == "classifier":
        raw = getattr(est, "classes_", None)
        arr = np.asarray(raw, dtype=object if isinstance(raw, list) else None)
        if arr.ndim == 1 and not isinstance(raw, list):
            classes = tuple(_scalar(v) for v in arr.tolist())
            label = TensorSpec(name="label", datatype=_label_type(arr.dtype.kind), shape=("batch",))
            proba = TensorSpec(name="probabilities", datatype="FP64", shape=("batch", len(classes)))
        else:  # multi-output (a list of class arrays per output), or no classes_ at all
            per_output = list(raw) if isinstance(raw, list) else []
            label = (
                TensorSpec(
                    name="label",
                    datatype=_label_type(np.asarray(per_output[0]).dtype.kind),
                    shape=("batch", len(per_output)),
                )
                if per_output
                else TensorSpec(name="label", datatype=None, shape=("batch",), type_repr="label")
            )
            proba = TensorSpec(
                name="probabilities",
                datatype=None,
                type_repr="list of (batch, n_classes) arrays, one per output",
            )
        outputs = (label, proba) if has_proba else (label,)
    elif kind == "regressor":
        coef: Any = getattr(final, "coef_", None)  # linear models have no n_outputs_
        n_out = getattr(final, "n_outputs_", len(coef) if np.ndim(coef) == 2 else 1)
        shape = ("batch",) if n_out == 1 else ("batch", int(n_out))
        outputs = (TensorSpec(name="prediction", datatype="FP64", shape=shape),)
    elif kind == "transformer":
        outputs = (TensorSpec(name="output", datatype="FP64", shape=("batch", -1)),)
    else:
        outputs = (
            TensorSpec(name="prediction", datatype=None, shape=("batch",), type_repr="predict() result"),
        )
    width = int(n_features) if n_features is not None else -1
    return NativeContract(
        framework="sklearn",
        task=task,
        model_type=public_name(type(est)),
        inputs=Tensors(tensors=(TensorSpec(name="input", datatype="FP64", shape=("batch", width)),)),
        outputs=Tensors(tensors=outputs),
        feature_names=tuple(str(n) for n in names) if names is not None else None,
        classes=classes,
        has_predict_proba=has_proba,
        metadata=metadata,
    )
