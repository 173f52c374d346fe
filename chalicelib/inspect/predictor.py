"""Python predictor inspector: the contract comes from ``predict.py``'s source (``ast``), never from
importing it, because the control plane must not run user code.

The source is hostile too: it is size-capped before parsing, a parse that runs out of stack or memory
(deeply nested expressions) is an ``ArtifactError``, annotations are followed at most
``MAX_ANNOTATION_DEPTH`` levels, and messages quote at most 80 characters of the source.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from chalicelib.core.errors import ArtifactError
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import Json

_SCALARS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "list": {"type": "array"},
    "List": {"type": "array"},
    "dict": {"type": "object"},
    "Dict": {"type": "object"},
    "Any": {},
    "None": {"type": "null"},
    "Image": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"},
    "File": {
        "type": "string",
        "contentEncoding": "base64",
        "contentMediaType": "application/octet-stream",
    },
}
MAX_SOURCE_BYTES = 1024 * 1024
MAX_ANNOTATION_DEPTH = 32
_NULL = {"type": "null"}
_LITERAL_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}
_INPUT_KEYS = {"description": "description", "ge": "minimum", "le": "maximum"}
_SUPPORTED = (
    "int, float, str, bool, Literal[...], list[T], dict[str, T], Optional[T], Image, File "
    "or a class in predict.py with annotated fields"
)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _any_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    unique = [s for i, s in enumerate(schemas) if s not in schemas[:i]]
    return unique[0] if len(unique) == 1 else {"anyOf": unique}


def parse_source(source: bytes | str, rel: str, *, mode: str = "exec") -> Any:
    """``ast.parse`` of user source, every way it can fail as an ``ArtifactError``."""
    if len(source) > MAX_SOURCE_BYTES:
        raise ArtifactError(f"{rel} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB")
    try:
        return ast.parse(source, filename=rel, mode=mode)
    except SyntaxError as exc:
        raise ArtifactError(
            f"{rel}: syntax error at line {exc.lineno}: {exc.msg}", hint="fix it; it must parse"
        ) from None
    except (RecursionError, MemoryError):
        raise ArtifactError(f"{rel}: the source is nested too deeply to read", hint="simplify it") from None
    except ValueError as exc:  # e.g. NUL bytes
        raise ArtifactError(f"{rel} is not Python source: {exc}") from None


def _source_text(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except RecursionError:
        return "<nested too deeply>"
    return text if len(text) <= 80 else text[:79] + "…"


class _Schemas:
    """Annotation -> JSON Schema, knowing the classes ``predict.py`` defines."""

    def __init__(self, rel: str, classes: dict[str, ast.ClassDef]) -> None:
        self.rel = rel
        self.classes = classes
        self.expanding: list[str] = []
        self.depth = 0

    def fail(self, where: str, node: ast.expr, why: str = "") -> ArtifactError:
        text = _source_text(node)
        return ArtifactError(
            f"{self.rel}: {where}: unsupported type annotation {text!r}{why}",
            hint=f"use {_SUPPORTED}",
        )

    def schema(self, node: ast.expr, where: str) -> dict[str, Any]:
        self.depth += 1
        try:
            if self.depth > MAX_ANNOTATION_DEPTH:
                raise ArtifactError(
                    f"{self.rel}: {where}: type annotation nested over {MAX_ANNOTATION_DEPTH} levels deep",
                    hint="flatten the type",
                )
            return self._schema(node, where)
        finally:
            self.depth -= 1

    def _schema(self, node: ast.expr, where: str) -> dict[str, Any]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "forward" reference
            node = self.forward(node, where)
        if isinstance(node, ast.Constant) and node.value is None:
            return dict(_NULL)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return _any_of([self.schema(node.left, where), self.schema(node.right, where)])
        name = _name(node)
        if name in _SCALARS:
            return dict(_SCALARS[name])
        if name in self.classes:
            return self.object_schema(self.classes[name], where)
        if isinstance(node, ast.Subscript):
            return self.generic(node, where)
        raise self.fail(where, node)

    def forward(self, node: ast.Constant, where: str) -> ast.expr:
        """The annotation a string spells; a string that does not parse is an unsupported annotation."""
        try:
            return parse_source(str(node.value), self.rel, mode="eval").body  # type: ignore[no-any-return]
        except ArtifactError:
            raise self.fail(where, node) from None

    def generic(self, node: ast.Subscript, where: str) -> dict[str, Any]:
        base = _name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Optional" and len(args) == 1:
            return _any_of([self.schema(args[0], where), dict(_NULL)])
        if base == "Union":
            return _any_of([self.schema(a, where) for a in args])
        if base == "Literal":
            try:
                values = [ast.literal_eval(a) for a in args]
            except ValueError:
                raise self.fail(where, node, " (Literal values must be literals)") from None
            kinds = {_LITERAL_TYPES.get(type(v)) for v in values}
            schema: dict[str, Any] = {"enum": values}
            if len(kinds) == 1 and None not in kinds:
                schema = {"type": kinds.pop(), **schema}
            return schema
        if base in ("list", "List") and len(args) == 1:
            return {"type": "array", "items": self.schema(args[0], where)}
        if base in ("dict", "Dict") and len(args) == 2:
            if _name(args[0]) != "str":
                raise self.fail(where, node, " (JSON object keys are strings: use dict[str, T])")
            return {"type": "object", "additionalProperties": self.schema(args[1], where)}
        raise self.fail(where, node)

    def object_schema(self, cls: ast.ClassDef, where: str) -> dict[str, Any]:
        if cls.name in self.expanding:
            raise ArtifactError(
                f"{self.rel}: {where}: class {cls.name} refers to itself, which a JSON Schema "
                "here cannot express",
                hint="flatten the type",
            )
        self.expanding.append(cls.name)
        props: dict[str, Any] = {}
        required: list[str] = []
        total = not any(
            k.arg == "total" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in cls.keywords
        )
        bases = [self.classes[b] for b in map(_name, cls.bases) if b in self.classes]
        for klass in [*bases, cls]:
            for stmt in klass.body:
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                if _name(stmt.annotation) == "ClassVar" or (
                    isinstance(stmt.annotation, ast.Subscript) and _name(stmt.annotation.value) == "ClassVar"
                ):
                    continue
                field = stmt.target.id
                props[field] = self.schema(stmt.annotation, f"{where}: {cls.name}.{field}")
                if stmt.value is None and total and field not in required:
                    required.append(field)
        self.expanding.pop()
        if not props:
            raise ArtifactError(
                f"{self.rel}: {where}: class {cls.name} has no annotated fields",
                hint="annotate its fields (TypedDict, dataclass or pydantic BaseModel)",
            )
        return {
            "type": "object",
            "title": cls.name,
            "properties": props,
            "required": required,
            "additionalProperties": False,
        }


def _literal(node: ast.expr, what: str, rel: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ArtifactError(
            f"{rel}: {what} must be a literal, got {_source_text(node)!r}",
            hint="write the value itself, not a name or expression",
        ) from None


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return ...


def _describe_default(
    node: ast.expr, schema: dict[str, Any], where: str, rel: str
) -> tuple[bool, dict[str, Any]]:
    """Whether the parameter is required, and the schema keywords its default adds."""
    func = _name(node.func) if isinstance(node, ast.Call) else None
    if not isinstance(node, ast.Call) or func != "Input":
        try:
            value = _jsonable(ast.literal_eval(node))
        except ValueError:  # a computed default: optional, but its value is not ours to know
            return False, {}
        return False, {} if value is ... else {"default": value}
    if len(node.args) > 1:
        raise ArtifactError(f"{rel}: {where}: Input() takes the default as its only positional")
    extra: dict[str, Any] = {}
    default: Any = _literal(node.args[0], f"{where}: Input default", rel) if node.args else ...
    is_array = "array" in {schema.get("type"), *(s.get("type") for s in schema.get("anyOf", []))}
    for kw in node.keywords:
        value = _literal(kw.value, f"{where}: Input({kw.arg}=...)", rel)
        if kw.arg == "default":
            default = value
        elif kw.arg in _INPUT_KEYS:
            if value is not None:
                extra[_INPUT_KEYS[kw.arg]] = value
        elif kw.arg in ("min_length", "max_length"):
            if value is not None:
                key = ("min" if kw.arg == "min_length" else "max") + ("Items" if is_array else "Length")
                extra[key] = value
        else:
            raise ArtifactError(
                f"{rel}: {where}: Input() has no argument {kw.arg!r}",
                hint="use default, description, ge, le, min_length or max_length",
            )
    if default is not ...:
        value = _jsonable(default)
        if value is not ...:
            extra = {"default": value, **extra}
    return default is ..., extra


def _pick_class(tree: ast.Module, rel: str) -> ast.ClassDef:
    ranked: list[tuple[bool, ast.ClassDef]] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        based = any(_name(b) == "BasePredictor" for b in node.bases)
        if "predict" in methods and ("setup" in methods or based):
            ranked.append((based, node))
    best = [cls for based, cls in ranked if based] or [cls for _, cls in ranked]
    if not best:
        raise ArtifactError(
            f"{rel}: no predictor class found",
            hint="define a class with setup() and predict() methods, subclassing BasePredictor",
        )
    if len(best) > 1:
        names = ", ".join(c.name for c in best)
        raise ArtifactError(f"{rel}: several predictor classes ({names})", hint="keep one")
    return best[0]


def inspect_predictor(path: Path, rel: str) -> NativeContract:
    if path.stat().st_size > MAX_SOURCE_BYTES:
        raise ArtifactError(f"{rel} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB")
    tree = parse_source(path.read_bytes(), rel)
    cls = _pick_class(tree, rel)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    schemas = _Schemas(rel, classes)
    predict = next(
        n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "predict"
    )
    owner = f"{cls.name}.predict"
    args = predict.args
    if args.vararg or args.kwarg:
        star = f"*{args.vararg.arg}" if args.vararg else f"**{args.kwarg.arg}"  # type: ignore[union-attr]
        raise ArtifactError(
            f"{rel}: {owner} takes {star}", hint="name every input as its own typed parameter"
        )
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += args.defaults
    params = list(zip(positional, defaults, strict=True))
    params += list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
    if params and params[0][0].arg == "self":
        params = params[1:]
    props: dict[str, Any] = {}
    required: list[str] = []
    for arg, default in params:
        where = f"{owner} parameter {arg.arg!r}"
        if arg.annotation is None:
            raise ArtifactError(f"{rel}: {where} has no type hint", hint=f"annotate it, e.g. {arg.arg}: str")
        schema = schemas.schema(arg.annotation, where)
        is_required = default is None
        if default is not None:
            is_required, extra = _describe_default(default, schema, where, rel)
            schema = {**schema, **extra}
        props[arg.arg] = schema
        if is_required:
            required.append(arg.arg)
    if predict.returns is None:
        raise ArtifactError(f"{rel}: {owner} has no return type hint", hint="annotate it, e.g. -> str")
    output = schemas.schema(predict.returns, f"{owner} return type")
    return NativeContract(
        framework="python",
        task="predictor",
        model_type=f"{rel}:{cls.name}",
        inputs=Json(
            json_schema={
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            }
        ),
        outputs=Json(json_schema=output),
    )
