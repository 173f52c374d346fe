"""Proof that a converted model answers like its source: the same rows through both, compared value by value.

The rows are the bundle's own requests - the protocol's example and every ``samples/`` file of a content type
the protocol takes, decoded and run through the built-in pre steps as the model's function would - and rows
drawn uniformly within each feature's range (seeded: the same model always gets the same rows). Labels must
be equal; numbers within the ``Tolerance``. A failure names the largest absolute difference, where it was and
the tolerance, and the deployment fails with it: nothing is served that answers otherwise than what was
uploaded.

It runs in the deploy service on numpy and the runtime's own decoding and steps, never the tenant's code: a
bundle whose pre steps include user code is checked on generated rows only. ``runtime.handler`` is not
imported: inside a Lambda function (the deploy worker is one) importing it loads a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.core.config_file import Equivalence, ModelConfigFile, Tolerance
from chalicelib.core.errors import ConversionError
from chalicelib.core.protocol import Tensors
from chalicelib.runtime.codecs import RequestError, decode_tensors, parse_json
from chalicelib.runtime.loaders import Model, ModelLoadError
from chalicelib.runtime.steps import RunStep, StepCall, Table, build_steps

SAMPLE_TYPES = {".csv": "text/csv", ".json": "application/json"}
MAX_SAMPLE_BYTES = 5 * 1024 * 1024
MAX_SAMPLE_ROWS = 10_000
GENERATED_ROWS = 256
SEED = 0
SPREAD = 3.0
"""A scaler's statistics give mean ± 3 standard deviations; with nothing known, a feature spans [-3, 3]."""
MARGIN = 0.1
"""Ranges are widened by a tenth on each side, so a little extrapolation is checked too."""
NATIVE_HINT = "deploy with runtime: native (the default) to serve the estimator itself"

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Rows:
    """The model inputs of one check, with where each row came from (``samples/x.csv row 3``)."""

    x: Matrix
    origins: tuple[str, ...]
    sample_rows: int
    ranges: str
    skipped: tuple[str, ...] = ()


# --------------------------------------------------------------------------- the rows


def _decode(manifest: ModelConfigFile, steps: list[RunStep], content_type: str, body: bytes) -> Any:
    """A request body as the model is given it: decoded per the protocol, then the pre steps."""
    spec = manifest.protocol.request_value
    value: Any
    if content_type == "text/csv":
        if spec.kind != "records":
            raise RequestError("the protocol takes no CSV")
        value = Table(csv=body.decode("utf-8", errors="strict"))
    else:
        doc = parse_json(body)
        if isinstance(spec, Tensors):
            value = decode_tensors(doc, spec)
        elif spec.kind == "records":
            value = Table(json=doc)
        else:
            raise RequestError(f"a {spec.kind} request is not a feature matrix")
    call = StepCall()
    for step in steps:
        value = step.run(value, call)
    return value


def _matrix(value: Any, name: str, width: int) -> Matrix:
    x = value.get(name) if isinstance(value, Mapping) else value
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != width:
        raise RequestError(f"the pre steps give {array.shape}, not [N, {width}]")
    return array


def sample_matrices(
    model_dir: Path, manifest: ModelConfigFile, width: int
) -> tuple[list[tuple[str, Matrix]], list[str]]:
    """(origin, rows) of the protocol's example and each sample file, as the model is given them; and the
    requests left out, with why."""
    if any(ref.is_user_code for ref in manifest.processing.pre):
        return [], ["the samples: a pre step is the tenant's code, which runs only in the model's container"]
    try:
        steps, _ = build_steps(manifest, model_dir, stages=("pre",))
    except (ImportError, ModelLoadError) as exc:  # a step's package the deploy service has not (pillow)
        return [], [f"the samples: the pre steps cannot run here ({' '.join(str(exc).split())[:120]})"]
    assert isinstance(manifest.native.inputs, Tensors)
    name = manifest.native.inputs.tensors[0].name
    offered = manifest.protocol.request.content_types
    bodies = [
        ("the protocol's example", "application/json", json.dumps(manifest.protocol.request.example).encode())
    ]
    folder = model_dir / "samples"
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        kind = SAMPLE_TYPES.get(path.suffix.lower())
        if path.is_file() and kind in offered and path.stat().st_size <= MAX_SAMPLE_BYTES:
            bodies.append((f"samples/{path.name}", str(kind), path.read_bytes()))
    found: list[tuple[str, Matrix]] = []
    skipped: list[str] = []
    for origin, content_type, body in bodies:
        try:
            found.append((origin, _matrix(_decode(manifest, steps, content_type, body), name, width)))
        except (RequestError, UnicodeDecodeError) as exc:
            skipped.append(f"{origin}: {' '.join(str(exc).split())[:160]}")
    return found, skipped


def _vector(step: Any, attribute: str, width: int) -> Matrix | None:
    value = getattr(step, attribute, None)
    if value is None or np.ndim(value) != 1 or len(value) != width:
        return None
    return np.asarray(value, dtype=np.float64)


def _scaler_bounds(step: Any, width: int) -> tuple[Matrix, Matrix, str] | None:
    """Bounds a fitted scaler knows of its training data (MinMaxScaler, StandardScaler, RobustScaler)."""
    name = type(step).__name__
    low, high = _vector(step, "data_min_", width), _vector(step, "data_max_", width)
    if low is not None and high is not None:
        return low, high, f"{name}'s data_min_/data_max_"
    for attribute in ("mean_", "center_"):
        center = _vector(step, attribute, width)
        if center is None:
            continue
        spread = _vector(step, "scale_", width)
        if spread is None:
            var = _vector(step, "var_", width)
            spread = np.sqrt(var) if var is not None else np.ones(width)
        return center - SPREAD * spread, center + SPREAD * spread, f"{name}'s {attribute} ± {SPREAD:g} scale_"
    return None


def _tree_bounds(step: Any, width: int) -> tuple[Matrix, Matrix, str] | None:
    """The split thresholds of a tree model taking the raw features: NaN where a feature is never split."""
    if hasattr(step, "tree_"):
        trees = [step.tree_]
    else:
        members = np.asarray(getattr(step, "estimators_", []), dtype=object).ravel()
        trees = [m.tree_ for m in members if hasattr(m, "tree_")]
    if not trees:
        return None
    low, high = np.full(width, np.nan), np.full(width, np.nan)
    for tree in trees[:200]:
        used = tree.feature >= 0
        features, thresholds = tree.feature[used], tree.threshold[used]
        if features.size and features.max() < width:
            np.fmin.at(low, features, thresholds)
            np.fmax.at(high, features, thresholds)
    return low, high, f"{type(step).__name__}'s split thresholds"


def feature_ranges(estimator: Any, observed: Matrix | None, width: int) -> tuple[Matrix, Matrix, str]:
    """(low, high, where from) per feature: the samples' values, and what the estimator's first step knows
    of its training data; [-3, 3] for a feature nothing tells of. Widened by ``MARGIN`` on each side."""
    from sklearn.pipeline import Pipeline

    first = estimator
    while isinstance(first, Pipeline):
        first = first.steps[0][1]
    bounds: list[tuple[Matrix, Matrix, str]] = []
    if observed is not None and len(observed):
        bounds.append((observed.min(axis=0), observed.max(axis=0), "the sample rows"))
    for found in (_scaler_bounds(first, width), _tree_bounds(first, width)):
        if found is not None:
            bounds.append(found)
    low = np.fmin.reduce([b[0] for b in bounds]) if bounds else np.full(width, np.nan)
    high = np.fmax.reduce([b[1] for b in bounds]) if bounds else np.full(width, np.nan)
    unknown = np.isnan(low) | np.isnan(high)
    low, high = np.where(unknown, -SPREAD, low), np.where(unknown, SPREAD, high)
    pad = np.where(high > low, (high - low) * MARGIN, 1.0)
    sources = [b[2] for b in bounds] + (
        [f"[-{SPREAD:g}, {SPREAD:g}] where nothing else tells"] if unknown.any() else []
    )
    return low - pad, high + pad, ", ".join(sources)


def rows_for(model_dir: Path, manifest: ModelConfigFile, estimator: Any, width: int) -> Rows:
    """The sample rows, then ``GENERATED_ROWS`` rows drawn uniformly within the features' ranges."""
    samples, skipped = sample_matrices(model_dir, manifest, width)
    blocks, origins, total = [], [], 0
    for origin, x in samples:
        x = x[: max(MAX_SAMPLE_ROWS - total, 0)]
        blocks.append(x)
        origins += [f"{origin} row {i + 1}" for i in range(len(x))]
        total += len(x)
    observed = np.vstack(blocks) if blocks else None
    low, high, ranges = feature_ranges(estimator, observed, width)
    generated = np.random.default_rng(SEED).uniform(low, high, size=(GENERATED_ROWS, width))
    origins += [f"generated row {i + 1}" for i in range(GENERATED_ROWS)]
    x = np.vstack([*blocks, generated])
    return Rows(x=x, origins=tuple(origins), sample_rows=total, ranges=ranges, skipped=tuple(skipped))


# --------------------------------------------------------------------------- the comparison


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _where(name: str, index: tuple[int, ...], origins: Sequence[str]) -> str:
    return f"{name}[{', '.join(map(str, index))}] ({origins[index[0]]})"


def _differences(native: npt.NDArray[Any], converted: npt.NDArray[Any]) -> Matrix:
    """|converted - native| per value: 0 where both are equal (infinities too) or NaN, inf where one is."""
    a, b = native.astype(np.float64), converted.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(b - a)
    diff = np.where(np.isnan(diff), np.inf, diff)
    return np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, diff)


def _label_mismatch(
    name: str, a: npt.NDArray[Any], b: npt.NDArray[Any], origins: Sequence[str]
) -> str | None:
    differs = np.asarray(a != b)
    if not differs.any():
        return None
    index = tuple(int(i) for i in np.argwhere(differs)[0])
    return (
        f"{name} differs at {_where(name, index, origins)}: native {_scalar(a[index])!r:.60}, converted "
        f"{_scalar(b[index])!r:.60}; {int(differs.sum())} of {differs.size} differ"
    )


def _answers(model: Model, what: str, rows: Rows, input_name: str) -> dict[str, Any]:
    """``model``'s outputs on the rows; a failure (a transformer refusing a generated value) names itself."""
    try:
        answers: dict[str, Any] = model.predict({input_name: rows.x})
    except Exception as exc:  # scikit-learn's or onnxruntime's own refusal: the tenant's code never runs here
        text = " ".join(str(exc).split())[:200]
        raise ConversionError(
            f"{what} fails on the {len(rows.origins)} rows that check the conversion: "
            f"{type(exc).__name__}: {text}",
            hint=NATIVE_HINT,
        ) from None
    return answers


def check(native: Model, converted: Model, rows: Rows, input_name: str, tolerance: Tolerance) -> Equivalence:
    """Both models on ``rows``: the proof, or ``ConversionError`` naming the largest difference."""
    want = _answers(native, "the estimator", rows, input_name)
    got = _answers(converted, "the converted ONNX graph", rows, input_name)
    worst, worst_at, labels = 0.0, "", None
    for name in want:
        a, b = np.asarray(want[name]), np.asarray(got[name])
        if a.shape != b.shape:
            raise ConversionError(
                f"the converted ONNX graph answers {name} of shape {b.shape}, the estimator {a.shape}",
                hint=NATIVE_HINT,
            )
        if name == "label" or a.dtype.kind not in "fc":
            labels = labels or _label_mismatch(name, a, b, rows.origins)
            continue
        diff = _differences(a, b)
        limit = tolerance.atol + tolerance.rtol * np.abs(np.nan_to_num(a.astype(np.float64)))
        over = diff > limit
        if over.any():
            index = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(over, diff, -1.0)), diff.shape))
            raise ConversionError(
                "the converted ONNX graph does not answer like the scikit-learn model: the largest absolute "
                f"difference is {diff[index]:.3g} at {_where(name, index, rows.origins)}: native "
                f"{_scalar(a[index]):.6g}, converted {_scalar(b[index]):.6g}; over the tolerance "
                f"|converted - native| <= {tolerance.atol:g} + {tolerance.rtol:g} * |native| "
                f"({int(over.sum())} of {over.size} values of {name} are)",
                hint=NATIVE_HINT,
            )
        if diff.size and diff.max() > worst:
            index = tuple(int(i) for i in np.unravel_index(np.argmax(diff), diff.shape))
            worst, worst_at = float(diff[index]), _where(name, index, rows.origins)
    if labels is not None:
        largest = f" (the largest numeric difference is {worst:.3g}, at {worst_at})" if worst_at else ""
        raise ConversionError(
            f"the converted ONNX graph does not answer like the scikit-learn model: {labels}{largest}",
            hint=NATIVE_HINT,
        )
    return Equivalence(
        tolerance=tolerance,
        sample_rows=rows.sample_rows,
        generated_rows=len(rows.origins) - rows.sample_rows,
        seed=SEED,
        ranges=rows.ranges,
        max_abs_diff=float(f"{worst:.3g}"),
        max_at=worst_at,
        skipped=rows.skipped,
    )
