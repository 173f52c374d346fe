"""Model loaders: one per framework, each giving ``predict(inputs) -> outputs`` keyed by native names.

A loader opens its artifact once, in Lambda's init phase, and refuses at init (``ModelLoadError``) what it
must not or cannot open, so a broken model fails the deployment's first invocation instead of every one.
Output names are the ones the inspectors put into ``manifest.native.outputs``, which the post steps and
the response schema refer to. Heavy libraries are imported here, lazily, so a model only pays for its own.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.protocol import Json, Tensors
from chalicelib.runtime.codecs import Problems, check_schema, to_jsonable
from chalicelib.runtime.predictor import File, Image, InputSpec

MB_PER_VCPU = 1769
"""Lambda allocates CPU in proportion to memory: one full vCPU at 1,769 MB."""


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; raised during init, so Lambda reports an init error of this type."""


class Model(Protocol):
    def predict(self, inputs: dict[str, Any]) -> Any:
        """Outputs keyed by native output name (tensor models) or the predictor's JSON-able result."""


def threads_for(memory_mb: int) -> int:
    """Compute threads matching the vCPUs Lambda gives ``memory_mb``: more threads than cores only
    adds contention (and a fraction of a vCPU is time-sliced, not a core)."""
    return max(1, min(os.cpu_count() or 1, memory_mb // MB_PER_VCPU))


def function_memory_mb(manifest: ModelConfigFile) -> int:
    """The function's real memory (Lambda sets it in the environment), else the configured one."""
    value = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    return int(value) if value.isdigit() else manifest.environment.memory_mb


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def import_user_file(model_dir: Path, rel: str) -> ModuleType:
    """Import a ``.py`` file of the model directory under a private module name.

    The module is registered in ``sys.modules`` before it runs (dataclasses and pickling look their
    module up there), and the model directory is appended to ``sys.path`` so the file can import its
    siblings without shadowing installed packages.
    """
    path = (model_dir / rel).resolve()
    name = "modelport_user." + re.sub(r"\W", "_", rel.removesuffix(".py"))
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    if str(model_dir) not in sys.path:
        sys.path.append(str(model_dir))
    sys.modules.setdefault("modelport_user", ModuleType("modelport_user"))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{rel}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        raise ModelLoadError(f"{rel}: importing it failed: {_describe(exc)}") from exc
    return module


def _feed(value: Any, spec: Tensors) -> dict[str, Any]:
    """What the pre steps produced, as named inputs: a user step may return one bare array."""
    if not isinstance(value, Mapping):
        if len(spec.tensors) != 1:
            raise TypeError(f"the model takes {len(spec.tensors)} named inputs, got {type(value).__name__}")
        return {spec.tensors[0].name: value}
    missing = [t.name for t in spec.tensors if t.name not in value]
    if missing:
        raise KeyError(f"model input(s) missing: {', '.join(missing)}")
    return dict(value)


# --------------------------------------------------------------------------- ONNX


class OnnxModel:
    def __init__(self, path: Path, manifest: ModelConfigFile, memory_mb: int) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads_for(memory_mb)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        assert isinstance(manifest.native.inputs, Tensors)
        self.spec = manifest.native.inputs
        self.dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        feed = {}
        for name, value in _feed(inputs, self.spec).items():
            dtype = self.dtypes.get(name)
            feed[name] = np.asarray(value, dtype=dtype) if dtype is not None else value
        # Non-tensor outputs (ZipMap's list of dicts) come back as Python lists and pass through.
        return dict(zip(self.outputs, self.session.run(None, feed), strict=True))


class ConvertedModel:
    """A scikit-learn model converted to ONNX at deploy time (``runtime: onnx``), run by onnxruntime and
    answering as the estimator does: each native output is read from the graph output the conversion
    recorded and given the native element type and rank (probabilities float32 -> float64, a regressor's
    ``[N, 1]`` -> ``[N]``, labels as text or integers), so post steps, schemas and clients see the native
    model's answer. Extra graph outputs (a classifier's scores where the estimator has no predict_proba)
    are dropped."""

    def __init__(self, graph: OnnxModel, native: Tensors, sources: Mapping[str, str]) -> None:
        self.graph = graph
        self.outputs: list[tuple[str, str, Any, int]] = []
        for spec in native.tensors:
            source = sources.get(spec.name)
            if source is None or source not in graph.outputs:
                raise ModelLoadError(
                    f"the converted graph has no output for {spec.name!r} (it has {', '.join(graph.outputs)})"
                )
            dtype = _NATIVE_DTYPES.get(spec.datatype) if spec.datatype is not None else None
            self.outputs.append((spec.name, source, dtype, len(spec.shape)))

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        raw = self.graph.predict(inputs)
        return {name: as_native(raw[source], dtype, rank) for name, source, dtype, rank in self.outputs}


def as_native(value: Any, dtype: Any, rank: int) -> npt.NDArray[Any]:
    """One graph output as the estimator answers it: ``dtype`` (``str`` for text) and ``rank`` dimensions."""
    array = np.asarray(value)
    if rank == 1 and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if dtype is str:
        return array.astype(str)
    return array.astype(dtype, copy=False) if dtype is not None else array


_NATIVE_DTYPES: dict[str, Any] = {
    "FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_,
    "BYTES": str,
}  # fmt: skip


def _load_converted(path: Path, manifest: ModelConfigFile, memory_mb: int) -> ConvertedModel:
    assert manifest.conversion is not None and isinstance(manifest.native.outputs, Tensors)
    graph = OnnxModel(path, manifest, memory_mb)
    return ConvertedModel(graph, manifest.native.outputs, manifest.conversion.outputs)


_ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(string)": object,
}  # fmt: skip


# --------------------------------------------------------------------------- scikit-learn


class SklearnModel:
    """Calls the estimator method behind each output name the sklearn inspector gives."""

    METHODS: ClassVar[dict[str, str]] = {
        "label": "predict",
        "prediction": "predict",
        "probabilities": "predict_proba",
        "output": "transform",
    }

    def __init__(self, estimator: Any, manifest: ModelConfigFile) -> None:
        self.estimator = estimator
        assert isinstance(manifest.native.inputs, Tensors) and isinstance(manifest.native.outputs, Tensors)
        self.spec = manifest.native.inputs
        self.calls: list[tuple[str, Callable[[Any], Any]]] = []
        for out in manifest.native.outputs.tensors:
            method = getattr(estimator, self.METHODS.get(out.name, "predict"), None)
            if method is None:
                raise ModelLoadError(f"the estimator has no method for output {out.name!r}")
            self.calls.append((out.name, method))
        # A model fitted on a DataFrame warns on every array it is given; the names were checked at
        # inspection and the tabular step orders columns by them.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        ((_, x),) = _feed(inputs, self.spec).items()
        matrix: npt.NDArray[Any] = np.asarray(x, dtype=np.float64)
        return {name: call(matrix) for name, call in self.calls}


def _load_sklearn(path: Path, manifest: ModelConfigFile) -> SklearnModel:
    if path.suffix.lower() == ".skops":
        import skops.io as sio

        return SklearnModel(sio.load(path, trusted=list(manifest.trusted_types)), manifest)
    if not manifest.allow_pickle:
        raise ModelLoadError(
            f"{path.name} is a pickle and the model config does not allow pickles (allow_pickle: false); "
            "convert it to .skops or set allow_pickle: true"
        )
    import joblib

    return SklearnModel(joblib.load(path), manifest)


# --------------------------------------------------------------------------- gradient boosting


class LightgbmModel:
    def __init__(self, path: Path, manifest: ModelConfigFile, memory_mb: int) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_file=str(path))
        assert isinstance(manifest.native.inputs, Tensors) and isinstance(manifest.native.outputs, Tensors)
        self.spec = manifest.native.inputs
        self.output = manifest.native.outputs.tensors[0].name
        self.threads = threads_for(memory_mb)

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        ((_, x),) = _feed(inputs, self.spec).items()
        result = self.booster.predict(np.asarray(x, dtype=np.float64), num_threads=self.threads)
        return {self.output: np.asarray(result)}


class XgboostModel:
    """XGBoost's native Booster (not installed in the repo's environment: this path is untested here)."""

    def __init__(self, path: Path, manifest: ModelConfigFile, memory_mb: int) -> None:
        import xgboost

        self.booster = xgboost.Booster()
        self.booster.load_model(str(path))
        self.booster.set_param({"nthread": threads_for(memory_mb)})
        assert isinstance(manifest.native.inputs, Tensors) and isinstance(manifest.native.outputs, Tensors)
        self.spec = manifest.native.inputs
        self.output = manifest.native.outputs.tensors[0].name

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        ((_, x),) = _feed(inputs, self.spec).items()
        # inplace_predict skips building a DMatrix; the booster computes in float32.
        result = self.booster.inplace_predict(np.asarray(x, dtype=np.float32))
        return {self.output: np.asarray(result)}


# --------------------------------------------------------------------------- Python predictor


class PredictorModel:
    """A user's ``predict.py`` class: ``setup()`` once here, ``predict(**inputs)`` per request."""

    def __init__(self, model_dir: Path, manifest: ModelConfigFile) -> None:
        rel, _, class_name = (manifest.native.model_type or "").partition(":")
        if not rel or not class_name:
            raise ModelLoadError(
                f"native.model_type must be 'file.py:Class', got {manifest.native.model_type!r}"
            )
        module = import_user_file(model_dir, rel)
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type):
            raise ModelLoadError(f"{rel} defines no class {class_name}")
        try:
            self.instance = cls()
            self.instance.setup()
        except BaseException as exc:
            raise ModelLoadError(f"{rel}: {class_name}.setup() failed: {_describe(exc)}") from exc
        self.call = self.instance.predict
        assert isinstance(manifest.native.inputs, Json) and isinstance(manifest.native.outputs, Json)
        schema = manifest.native.inputs.json_schema
        self.output_schema = manifest.native.outputs.json_schema
        self.binary = {
            name: kind for name, prop in schema.get("properties", {}).items() if (kind := _binary_kind(prop))
        }
        # An ``Input(...)`` default is an InputSpec object: it must never reach user code.
        self.defaults: dict[str, Any] = {}
        for name, param in inspect.signature(self.call).parameters.items():
            if isinstance(param.default, InputSpec) and param.default.default is not ...:
                self.defaults[name] = param.default.default

    def predict(self, inputs: dict[str, Any]) -> Any:
        kwargs = {n: copy.deepcopy(v) for n, v in self.defaults.items() if n not in inputs}
        for name, value in inputs.items():
            kind = self.binary.get(name)
            kwargs[name] = (
                kind(base64.b64decode(value)) if kind is not None and isinstance(value, str) else value
            )
        result = to_jsonable(self.call(**kwargs))
        problems = Problems()
        check_schema(result, self.output_schema, "", problems)
        if problems:
            item = problems.items[0]
            where = item["pointer"] or "/"
            raise TypeError(
                f"predict() returned a value that does not match its return type: {where}: {item['message']}"
            )
        return result


def _binary_kind(schema: Mapping[str, Any]) -> type[bytes] | None:
    for option in [schema, *schema.get("anyOf", ())]:
        if option.get("contentEncoding") == "base64":
            return Image if str(option.get("contentMediaType", "")).startswith("image/") else File
    return None


# --------------------------------------------------------------------------- entry point


def load_model(manifest: ModelConfigFile, model_dir: Path) -> Model:
    """Open the manifest's model from ``model_dir``; every failure becomes a ``ModelLoadError``."""
    framework = manifest.native.framework
    if framework == "python":
        return PredictorModel(model_dir, manifest)
    served = manifest.artifact.framework  # onnx where a scikit-learn model was converted (runtime: onnx)
    suffixes = {"onnx": (".onnx",), "sklearn": (".skops", ".joblib", ".pkl", ".pickle"),
                "xgboost": (".json", ".ubj"), "lightgbm": (".txt",), "python": ()}[served]  # fmt: skip
    files = [f.path for f in manifest.artifact.files if Path(f.path).suffix.lower() in suffixes]
    if len(files) != 1:
        raise ModelLoadError(f"expected one {served} model file in the artifact, found {files or 'none'}")
    path = model_dir / files[0]
    memory_mb = function_memory_mb(manifest)
    try:
        if manifest.conversion is not None:
            return _load_converted(path, manifest, memory_mb)
        if framework == "onnx":
            return OnnxModel(path, manifest, memory_mb)
        if framework == "sklearn":
            return _load_sklearn(path, manifest)
        if framework == "lightgbm":
            return LightgbmModel(path, manifest, memory_mb)
        return XgboostModel(path, manifest, memory_mb)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{files[0]}: the {served} model could not be loaded: {_describe(exc)}") from exc
