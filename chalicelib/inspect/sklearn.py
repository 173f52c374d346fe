"""scikit-learn inspector: ``.skops`` files in-process, pickles only in an isolated child process.

``contract_from_estimator`` is shared with ``_pickle_probe``, which imports this module inside the
child; so nothing heavy (numpy, sklearn, skops) may be imported at module level here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import ArtifactError, UnsafeArtifact
from chalicelib.core.native import NativeContract, Scalar, Task
from chalicelib.core.protocol import DataType, Tensors, TensorSpec

if TYPE_CHECKING:
    from chalicelib.core.config import ModelConfig

PROBE_TIMEOUT_S = 60.0
# -I ignores PYTHONPATH and never puts the cwd on sys.path, so the probe is found via argv[1].
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from chalicelib.inspect._pickle_probe import main; sys.exit(main(sys.argv[2:]))"
)
PROBE_CLEAN_EXIT = 2
"""Exit status of a probe that failed with a message meant for the user as is."""


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


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
        raise ArtifactError(
            f"{rel} holds a {public_name(type(est))}, not a scikit-learn estimator",
            hint="save the fitted estimator itself",
        )
    if not _is_fitted(est):
        raise ArtifactError(f"{rel} holds an estimator that is not fitted", hint="fit it, then save it")
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


def inspect_skops(path: Path, rel: str, config: ModelConfig) -> NativeContract:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ArtifactError(
            f"{rel} is not a valid .skops file (corrupt or not a zip archive): {_short(exc)}",
            hint="save it again with skops.io.dump",
        ) from None
    refused = sorted(set(untrusted) - set(config.trusted_types))
    if refused:
        raise UnsafeArtifact(
            f"{rel} contains types skops does not trust by default: {', '.join(refused)}",
            hint="if you trust them, add them to trusted_types: in modelport.yaml",
        )
    try:
        est = sio.load(path, trusted=list(config.trusted_types))
    except Exception as exc:
        raise ArtifactError(
            f"{rel} could not be loaded by skops: {_short(exc)}",
            hint="install the packages its types come from, or save it again",
        ) from None
    return contract_from_estimator(est, rel=rel, fmt="skops")


def inspect_pickle(
    path: Path, rel: str, config: ModelConfig, *, timeout_s: float = PROBE_TIMEOUT_S
) -> NativeContract:
    """Unpickling runs arbitrary code, so it only ever happens in a resource-limited child."""
    if not config.allow_pickle:
        raise UnsafeArtifact(
            f"{rel} is a pickle: loading it can run arbitrary code, so it is not opened by default",
            hint="convert it to .skops (skops.io.dump) or set allow_pickle: true in modelport.yaml",
        )
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    env |= {var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, "-I", "-c", _BOOTSTRAP, str(root), str(path.resolve()), rel]
    with tempfile.TemporaryDirectory(prefix="modelport-probe-") as cwd:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so a timeout kills whatever the pickle started, too
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
            raise ArtifactError(
                f"{rel}: loading the pickle took longer than {timeout_s:g} s and was stopped",
                hint="check that it is a plain fitted estimator, or convert it to .skops",
            ) from None
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    if proc.returncode == PROBE_CLEAN_EXIT and last:
        raise ArtifactError(last)
    if proc.returncode != 0:
        why = last or (
            f"killed by signal {-proc.returncode} (memory or CPU limit?)"
            if proc.returncode < 0
            else f"exit status {proc.returncode}"
        )
        raise ArtifactError(f"{rel} could not be loaded in isolation: {why}")
    try:
        return NativeContract.model_validate_json(out)
    except ValueError:
        raise ArtifactError(
            f"{rel}: the isolated loader returned no valid contract" + (f" ({last})" if last else "")
        ) from None
