"""ONNX inspector (named ``onnx_`` so it never shadows the ``onnx`` package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chalicelib.core.errors import ArtifactError
from chalicelib.core.native import NativeContract, Scalar, Task
from chalicelib.core.protocol import DataType, Dim, MapSpec, Tensors, TensorSpec

_DATATYPES: dict[str, DataType] = {
    "FLOAT": "FP32", "DOUBLE": "FP64", "FLOAT16": "FP16", "BOOL": "BOOL", "STRING": "BYTES",
    "INT8": "INT8", "INT16": "INT16", "INT32": "INT32", "INT64": "INT64",
    "UINT8": "UINT8", "UINT16": "UINT16", "UINT32": "UINT32", "UINT64": "UINT64",
}  # fmt: skip
_CLASSIFIER_OPS = {"ZipMap", "LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier"}
_REGRESSOR_OPS = {"LinearRegressor", "TreeEnsembleRegressor", "SVMRegressor"}
_LABEL_ATTRS = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")
MAX_MAP_KEYS = 4096
"""A ZipMap's keys become one schema property each: past this many, its maps are objects of any keys
(a hostile file's million labels must not become a million-property schema in the config file)."""
MAX_KEY_CHARS = 256


def _short(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 160 else text[:157] + "..."


def _elem_name(elem: int) -> str:
    import onnx

    try:
        return str(onnx.TensorProto.DataType.Name(elem))
    except ValueError:
        return f"elem{elem}"


def _type_repr(tp: Any) -> str:
    """ONNX's own spelling of a type, e.g. ``seq(map(int64,tensor(float)))``."""
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        inner = getattr(tp, which)
        prefix = "tensor" if which == "tensor_type" else "sparse_tensor"
        return f"{prefix}({_elem_name(inner.elem_type).lower()})"
    if which == "sequence_type":
        return f"seq({_type_repr(tp.sequence_type.elem_type)})"
    if which == "map_type":
        key = _elem_name(tp.map_type.key_type).lower()
        return f"map({key},{_type_repr(tp.map_type.value_type)})"
    if which == "optional_type":
        return f"optional({_type_repr(tp.optional_type.elem_type)})"
    return which or "unknown"


def _map_of(tp: Any) -> MapSpec | None:
    """``map(K, tensor(V))`` or ``seq(map(K, tensor(V)))`` of OIP-typed keys and values; else None."""
    sequence = tp.WhichOneof("value") == "sequence_type"
    if sequence:
        tp = tp.sequence_type.elem_type
    if tp.WhichOneof("value") != "map_type":
        return None
    value = tp.map_type.value_type
    if value.WhichOneof("value") != "tensor_type":
        return None
    key = _DATATYPES.get(_elem_name(tp.map_type.key_type))
    elem = _DATATYPES.get(_elem_name(value.tensor_type.elem_type))
    if key not in ("INT64", "BYTES") or elem is None:
        return None
    return MapSpec(key=key, value=elem, sequence=sequence)


def _spec(value_info: Any) -> TensorSpec:
    tp = value_info.type
    if tp.WhichOneof("value") != "tensor_type":
        m = _map_of(tp)
        rows: tuple[Dim, ...] = ("batch",) if m is not None and m.sequence else ()
        return TensorSpec(name=value_info.name, datatype=None, shape=rows, type_repr=_type_repr(tp), map_of=m)
    tensor = tp.tensor_type
    datatype = _DATATYPES.get(_elem_name(tensor.elem_type))
    shape: tuple[Dim, ...] = ()
    if tensor.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else d.dim_param if d.dim_param else -1
            for d in tensor.shape.dim
        )
    repr_ = None if datatype and tensor.HasField("shape") else _type_repr(tp)
    return TensorSpec(name=value_info.name, datatype=datatype, shape=shape, type_repr=repr_)


def _with_zipmap_keys(spec: TensorSpec, nodes: list[Any]) -> TensorSpec:
    """A map output made by a ZipMap holds one key per class label: the keys are known."""
    import onnx

    if spec.map_of is None:
        return spec
    for node in nodes:
        if node.op_type != "ZipMap" or spec.name not in node.output:
            continue
        for attr in node.attribute:
            if attr.name in ("classlabels_strings", "classlabels_int64s"):
                values = onnx.helper.get_attribute_value(attr)
                keys = tuple(
                    v.decode(errors="replace") if isinstance(v, bytes) else str(int(v)) for v in values
                )
                if (
                    keys
                    and len(keys) <= MAX_MAP_KEYS
                    and max(map(len, keys)) <= MAX_KEY_CHARS
                    and len(set(keys)) == len(keys)
                ):
                    return spec.model_copy(update={"map_of": spec.map_of.model_copy(update={"keys": keys})})
    return spec


def _classes(nodes: list[Any], initializers: dict[str, Any]) -> tuple[Scalar, ...] | None:
    import onnx

    # ZipMap names the probabilities the user sees, so it wins over the classifier node.
    for node in sorted(nodes, key=lambda n: n.op_type != "ZipMap"):
        if node.op_type not in _CLASSIFIER_OPS:
            continue
        for attr in node.attribute:
            if attr.name in _LABEL_ATTRS:
                values = onnx.helper.get_attribute_value(attr)
                if values:
                    return tuple(
                        v.decode(errors="replace") if isinstance(v, bytes) else int(v) for v in values
                    )
    # skl2onnx classifiers without an ML op (MLP, ...) pick labels from a constant class list.
    for node in nodes:
        if node.op_type == "ArrayFeatureExtractor" and node.input[0] in initializers:
            array = onnx.numpy_helper.to_array(initializers[node.input[0]])
            if array.ndim == 1 and array.dtype.kind in "iuOSU":
                return tuple(v.decode() if isinstance(v, bytes) else v for v in array.tolist())
    return None


def inspect_onnx(path: Path, rel: str) -> NativeContract:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(
            f"{rel} is not a valid ONNX model (truncated or corrupt): {_short(exc)}",
            hint="export it again",
        ) from None
    graph = model.graph
    tensors = [*graph.initializer, *(a.t for n in graph.node for a in n.attribute if a.HasField("t"))]
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        raise ArtifactError(
            f"{rel} keeps its weights in external data files, which are not supported yet",
            hint="save it as one file: onnx.save_model(model, path, save_as_external_data=False)",
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ArtifactError(
            f"{rel} is not a valid ONNX model (truncated or corrupt): {_short(exc)}",
            hint="export it again",
        ) from None

    initializers = {t.name: t for t in graph.initializer}
    inputs = tuple(_spec(v) for v in graph.input if v.name not in initializers)
    nodes = list(graph.node)
    outputs = tuple(_with_zipmap_keys(_spec(v), nodes) for v in graph.output)
    ops = {n.op_type for n in nodes}
    names = {o.name for o in outputs}
    task: Task = "unknown"
    if ops & _CLASSIFIER_OPS or (
        names & {"label", "output_label"} and names & {"probabilities", "output_probability"}
    ):
        task = "classifier"
    elif ops & _REGRESSOR_OPS:
        task = "regressor"

    versions: dict[str, int] = {}
    for o in model.opset_import:  # "" and "ai.onnx" are the same domain; exporters repeat them
        domain = o.domain or "ai.onnx"
        versions[domain] = max(versions.get(domain, 0), o.version)
    opset = ",".join(f"{d}={v}" for d, v in sorted(versions.items()))
    metadata = {"opset": opset, "ir_version": str(model.ir_version)}
    producer = f"{model.producer_name} {model.producer_version}".strip()
    if producer:
        metadata["producer"] = producer
    if graph.name:
        metadata["graph"] = graph.name
    doc = model.doc_string.strip()
    if doc and len(doc) <= 200 and "\n" not in doc:
        metadata["doc_string"] = doc
    return NativeContract(
        framework="onnx",
        task=task,
        inputs=Tensors(tensors=inputs),
        outputs=Tensors(tensors=outputs),
        classes=_classes(nodes, initializers) if task == "classifier" else None,
        metadata=metadata,
    )
