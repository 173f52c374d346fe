"""``runtime: onnx``: a scikit-learn estimator converted to ONNX at deploy time (skl2onnx), proven equivalent.

Only a .skops file of skops' default types is loaded for it (``inspect.sklearn.load_for_conversion``), as for
its inspection; pickles and trusted types are refused, never opened. The graph takes the features as one
float32 tensor named like the native input (``input [N, n_features]``), a classifier answers its
probabilities as a tensor (skl2onnx's ``zipmap: False``), and it targets operator sets the pinned onnxruntime
runs. It is written under ``CONVERTED_DIR`` of the model directory, run against the estimator on the same
rows (``inspect.equivalence``) and recorded with that proof in the config file; the image ships it, and no
scikit-learn.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from chalicelib.core.config_file import (
    CONVERTED_DIR,
    ArtifactFile,
    Conversion,
    ModelConfigFile,
    Tolerance,
)
from chalicelib.core.errors import ArtifactError, ConversionError
from chalicelib.core.files import sha256_file
from chalicelib.core.protocol import Tensors
from chalicelib.inspect.equivalence import NATIVE_HINT, check, rows_for
from chalicelib.inspect.sklearn import load_for_conversion
from chalicelib.runtime.loaders import MB_PER_VCPU, ConvertedModel, OnnxModel, SklearnModel

TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
"""ai.onnx 17 and ai.onnx.ml 3, as the examples' graphs: onnxruntime runs them from 1.13 on (the pin is 1.32);
skl2onnx uses a lower set where the graph needs no more."""
CONVERTED_FILE = "model.onnx"


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    text = " ".join(lines[0].split())
    return text if len(text) <= 240 else text[:237] + "..."


def _source(manifest: ModelConfigFile) -> ArtifactFile:
    (source,) = manifest.artifact.files  # the sklearn inspector takes exactly one model file
    return source


def _classifiers(estimator: Any) -> list[Any]:
    """The estimator whose outputs are the model's (a pipeline's last step), when it is a classifier."""
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    final = estimator
    while isinstance(final, Pipeline):
        final = final.steps[-1][1]
    return [final] if is_classifier(final) else []


def _normalized(model: Any) -> Any:
    """Opset imports once per domain, sorted: skl2onnx may repeat them, in an order a process picks."""
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    del model.opset_import[:]
    for domain, version in sorted(versions.items()):
        model.opset_import.add(domain=domain, version=version)
    return model


def _output_sources(native: Tensors, graph: list[str], model_type: str) -> dict[str, str]:
    """Native output -> the graph output it is read from: the same name, or the one output of each."""
    sources: dict[str, str] = {}
    for spec in native.tensors:
        if spec.name in graph:
            sources[spec.name] = spec.name
        elif len(native.tensors) == 1 and len(graph) == 1:
            sources[spec.name] = graph[0]
        else:
            raise ConversionError(
                f"the ONNX graph skl2onnx makes of {model_type} answers {', '.join(graph)}, none of them "
                f"the estimator's {spec.name!r}",
                hint=NATIVE_HINT,
            )
    return sources


def _skl2onnx(estimator: Any, name: str, input_name: str, width: int) -> Any:
    """skl2onnx's graph; probabilities as a tensor where the classifier's converter has the option (one
    without predict_proba, such as LinearSVC's, has none and answers labels and scores)."""
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(c): {"zipmap": False} for c in _classifiers(estimator)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for attempt in (options, {}):
            try:
                return skl2onnx.convert_sklearn(
                    estimator,
                    name=name,  # the graph's name; skl2onnx picks a random one otherwise
                    initial_types=[(input_name, FloatTensorType([None, width]))],
                    options=attempt or None,
                    target_opset=TARGET_OPSET,
                )
            except NameError as exc:
                if not attempt or "Option 'zipmap'" not in str(exc):
                    raise
    raise AssertionError("unreachable")  # pragma: no cover


def to_onnx(estimator: Any, manifest: ModelConfigFile, rel: str) -> tuple[bytes, dict[str, str]]:
    """The serialized graph of ``estimator`` and where each native output is read from in it."""
    native = manifest.native
    model_type = native.model_type or type(estimator).__name__
    width = native.n_features
    assert isinstance(native.inputs, Tensors) and isinstance(native.outputs, Tensors)
    if width is None:
        raise ConversionError(
            f"runtime: onnx cannot convert {model_type} ({rel}): it does not record how many features it "
            "takes (n_features_in_)",
            hint=NATIVE_HINT,
        )
    untyped = [t.name for t in native.outputs.tensors if t.datatype is None]
    if untyped:
        raise ConversionError(
            f"runtime: onnx cannot convert {model_type} ({rel}): its output {untyped[0]!r} is not one "
            "tensor (a multi-output classifier, or an estimator of no known task)",
            hint=NATIVE_HINT,
        )
    import skl2onnx

    try:
        graph = _skl2onnx(estimator, manifest.name, native.inputs.tensors[0].name, width)
    except Exception as exc:  # skl2onnx raises what its converters raise: a refusal, whatever its type
        raise ConversionError(
            f"skl2onnx {skl2onnx.__version__} cannot convert {model_type} ({rel}): {_short(exc)}",
            hint=NATIVE_HINT
            + "; skl2onnx's supported estimators: https://onnx.ai/sklearn-onnx/supported.html",
        ) from None
    sources = _output_sources(native.outputs, [o.name for o in graph.graph.output], model_type)
    return _normalized(graph).SerializeToString(), sources


def write_converted(model_dir: Path, data: bytes) -> ArtifactFile:
    """Write the graph to ``model_dir/CONVERTED_DIR`` (atomically: concurrent intakes of one directory
    write the same bytes); its artifact file, as the image ships it."""
    folder = model_dir / CONVERTED_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o644)  # as any model file (mkstemp makes it private)
            os.replace(tmp, folder / CONVERTED_FILE)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        raise ArtifactError(
            f"cannot write the converted model to {CONVERTED_DIR}/ in {model_dir}: {exc.strerror or exc}",
            hint="runtime: onnx writes the converted graph into the model directory: make it writable",
        ) from None
    return ArtifactFile(
        path=CONVERTED_FILE, sha256=sha256_file(folder / CONVERTED_FILE), size_bytes=len(data)
    )


def _graph_model(path: Path, manifest: ModelConfigFile, sources: dict[str, str]) -> ConvertedModel:
    assert isinstance(manifest.native.outputs, Tensors)
    try:
        graph = OnnxModel(path, manifest, MB_PER_VCPU)
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime cannot load the converted graph: {_short(exc)}", hint=NATIVE_HINT
        ) from None
    return ConvertedModel(graph, manifest.native.outputs, sources)


def convert_model(
    model_dir: Path, manifest: ModelConfigFile, *, tolerance: Tolerance | None = None
) -> tuple[Conversion, tuple[ArtifactFile, ...]]:
    """Convert the scikit-learn model of ``manifest`` (its native config file), write the graph, prove it
    answers like the estimator: the conversion record and the converted artifact's files."""
    import skl2onnx

    source = _source(manifest)
    estimator = load_for_conversion(model_dir / source.path, source.path)
    data, sources = to_onnx(estimator, manifest, source.path)
    written = write_converted(model_dir, data)
    path = model_dir / CONVERTED_DIR / CONVERTED_FILE
    try:
        converted = _graph_model(path, manifest, sources)
        width = manifest.native.n_features
        assert width is not None and isinstance(manifest.native.inputs, Tensors)
        rows = rows_for(model_dir, manifest, estimator, width)
        proof = check(
            SklearnModel(estimator, manifest),
            converted,
            rows,
            manifest.native.inputs.tensors[0].name,
            tolerance or Tolerance(),
        )
    except BaseException:
        path.unlink(missing_ok=True)  # a graph that does not answer like the estimator is not left behind
        raise
    conversion = Conversion(
        source=manifest.artifact,
        converter=f"skl2onnx {skl2onnx.__version__}",
        target_opset={domain or "ai.onnx": version for domain, version in TARGET_OPSET.items()},
        outputs=sources,
        equivalence=proof,
    )
    return conversion, (written,)


def restore_converted(model_dir: Path, manifest: ModelConfigFile) -> None:
    """Make the converted graph again where it is missing (a resumed deployment extracts its bundle anew),
    from the source artifact the config file records; the image builder checks the recorded digest."""
    conversion = manifest.conversion
    if conversion is None:
        return
    for file in manifest.artifact.files:
        path = model_dir / CONVERTED_DIR / file.path
        if path.is_file() and sha256_file(path) == file.sha256:
            return
    (source,) = conversion.source.files
    path = model_dir / source.path
    if not path.is_file() or sha256_file(path) != source.sha256:
        raise ArtifactError(f"{source.path} changed since the model config file was made")
    native = manifest.model_copy(update={"artifact": conversion.source, "conversion": None})
    data, _ = to_onnx(load_for_conversion(path, source.path), native, source.path)
    write_converted(model_dir, data)
