"""User steps' types, read from their source (``ast``), never by importing it.

A user step is ``path/file.py:function``: a module-level ``def function(value: T) -> U`` in the model
directory. Its annotations become a ``UserSignature`` that types it in the protocol like a built-in step:

- JSON types, as for predictors (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, ``list[T]``,
  ``dict[str, T]``, ``Optional[T]``, ``Any``, or a TypedDict/dataclass defined in the same file);
- ``np.ndarray`` / ``npt.NDArray[...]``: one tensor;
- ``dict[str, np.ndarray]`` / ``Mapping[str, NDArray[...]]``: tensors by name.

A side without an annotation is left untyped (``None``): it bridges its neighbour (``core.steps.UserStep``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib.core.errors import ArtifactError
from chalicelib.core.steps import UserSignature, UserType
from chalicelib.inspect.predictor import MAX_SOURCE_BYTES, _name, _Schemas, parse_source

if TYPE_CHECKING:
    from chalicelib.core.config import ModelConfig

_ARRAYS = ("ndarray", "NDArray", "ArrayLike")
_MAPPINGS = ("dict", "Dict", "Mapping", "MutableMapping")


def _is_array(node: ast.expr) -> bool:
    if isinstance(node, ast.Subscript):  # NDArray[np.float32]
        node = node.value
    return _name(node) in _ARRAYS


def _user_type(node: ast.expr, schemas: _Schemas, where: str) -> UserType:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation
        node = schemas.forward(node, where)
    if _is_array(node):
        return UserType(kind="tensor")
    if isinstance(node, ast.Subscript) and _name(node.value) in _MAPPINGS:
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if len(args) == 2 and _name(args[0]) == "str" and _is_array(args[1]):
            return UserType(kind="tensors")
    return UserType(kind="json", json_schema=schemas.schema(node, where))


def _function(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    found = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            found = node  # the last definition wins, as at import
    return found


def inspect_user_step(model_dir: Path, ref: str) -> UserSignature:
    """The types of ``ref`` (``path/file.py:function``) from the file's source."""
    rel, _, name = ref.partition(":")
    path = model_dir / rel
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(model_dir.resolve()):
            raise ArtifactError(f"user step {ref}: {rel} leads outside the model directory")
        if not path.is_file():
            raise ArtifactError(f"user step {ref}: no file {rel} in the model directory")
        if path.stat().st_size > MAX_SOURCE_BYTES:
            raise ArtifactError(f"user step {ref}: {rel} is larger than 1 MiB")
        source = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"user step {ref}: cannot read {rel}: {exc.strerror or exc}") from None
    tree = parse_source(source, rel)
    fn = _function(tree, name)
    if fn is None:
        raise ArtifactError(
            f"user step {ref}: {rel} defines no function {name}",
            hint="define it at the top level of the file: def " + name + "(value): ...",
        )
    if isinstance(fn, ast.AsyncFunctionDef):
        raise ArtifactError(f"user step {ref}: {name} is async; a step is a plain function")
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    required = len(positional) - len(args.defaults)
    kw_required = [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    if not positional or required > 1 or kw_required:
        raise ArtifactError(
            f"user step {ref}: {name} must take the value as its one required parameter",
            hint=f"def {name}(value: T) -> U",
        )
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    schemas = _Schemas(rel, classes)
    param = positional[0]
    accepts = (
        None
        if param.annotation is None
        else _user_type(param.annotation, schemas, f"{name} parameter {param.arg!r}")
    )
    returns = None if fn.returns is None else _user_type(fn.returns, schemas, f"{name} return type")
    return UserSignature(ref=ref, accepts=accepts, returns=returns)


def inspect_user_steps(model_dir: Path, config: ModelConfig) -> tuple[UserSignature, ...]:
    """The types of every user step ``config`` names, sorted by reference."""
    refs = sorted({r.step for r in (*config.processing.pre, *config.processing.post) if r.is_user_code})
    return tuple(inspect_user_step(model_dir, ref) for ref in refs)
