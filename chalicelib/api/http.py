"""Routing with the error map, request parsing and the OpenAPI document, in one place.

``Api.route`` registers a Chalice route and records its documentation from the same arguments, so the
control API's OpenAPI 3.1 document cannot drift from the routes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from chalice.app import Blueprint, Request, Response
from pydantic import BaseModel, ValidationError

from chalicelib.api.errors import error_response
from chalicelib.core.config import SLUG
from chalicelib.core.errors import (
    InvalidRequest,
    ModelportError,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from chalicelib.core.jsontext import JsonTextError, loads, pointer, short
from chalicelib.core.records import Account
from chalicelib.core.trace import current

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

MAX_JSON_BYTES = 1024 * 1024
BODY_TYPES = ["application/json", "text/csv", "image/png", "image/jpeg", "image/webp"]
"""What an invoke (or a job) may send: a model takes some of these, per its protocol."""


def raw_body(request: Request) -> bytes:
    raw = request.raw_body or b""
    return raw.encode() if isinstance(raw, str) else raw


@dataclass(frozen=True)
class Query:
    """A query parameter a route reads, as its OpenAPI entry says it."""

    name: str
    description: str
    schema: tuple[tuple[str, Any], ...] = (("type", "string"),)


def bounded(
    kind: str, low: float, high: float | None = None, *, exclusive: bool = False
) -> tuple[tuple[str, Any], ...]:
    """The schema of a number query parameter between ``low`` and ``high``."""
    return (("type", kind), ("exclusiveMinimum" if exclusive else "minimum", low)) + (
        (("maximum", high),) if high is not None else ()
    )


DATE = (("type", "string"), ("format", "date"))

INPUT_QUERY = (
    Query(
        "input_url",
        "the input by reference: an https URL, or s3://<data bucket>/uploads/... of POST /v1/uploads",
    ),
    Query(
        "webhook", "with Prefer: respond-async (or on /jobs): the https URL the job's outcome is posted to"
    ),
)
"""What an invocation or a job reads from the query string."""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    list_response: bool
    status: int
    auth: bool
    errors: tuple[int, ...]
    produces: tuple[str, ...] = ()
    """Media types of a success answer that is not a JSON model (the console's files)."""
    query: tuple[Query, ...] = ()


OPERATIONS: list[Operation] = []


class Api:
    """A blueprint whose routes map domain errors and document themselves."""

    def __init__(
        self,
        import_name: str,
        tag: str,
        authorizer: Any = None,
        *,
        error_response: Callable[[ModelportError], Response] = error_response,
    ) -> None:
        """``error_response``: how this API's errors look (the Open Inference Protocol has its own)."""
        self.blueprint = Blueprint(import_name)
        self.tag = tag
        self.authorizer = authorizer
        self.error_response = error_response

    def route(
        self,
        path: str,
        method: str = "GET",
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        list_response: bool = False,
        status: int = 200,
        auth: bool = True,
        errors: tuple[int, ...] = (),
        content_types: list[str] | None = None,
        produces: tuple[str, ...] = (),
        query: tuple[Query, ...] = (),
    ) -> Callable[[F], F]:
        def register(view: F) -> F:
            OPERATIONS.append(
                Operation(
                    method, path, summary, self.tag, body, response, list_response, status, auth, errors,
                    produces, query,
                )
            )  # fmt: skip
            kwargs: dict[str, Any] = {"methods": [method]}
            if content_types:
                kwargs["content_types"] = content_types
            if auth and self.authorizer is not None:
                kwargs["authorizer"] = self.authorizer
            self.blueprint.route(path, **kwargs)(domain_errors(view, self.error_response))
            return view

        return register


def domain_errors(view: F, respond: Callable[[ModelportError], Response] = error_response) -> F:
    """Chalice turns any exception into a 500 before middleware sees it; map ours at the view. A backing
    service that did not answer arrives as ``Unavailable`` (503): the adapters translate their SDK's
    errors."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except ModelportError as exc:
            observation = current()
            if observation is not None:
                observation.error_class = type(exc).__name__
            return respond(exc)

    return wrapper  # type: ignore[return-value]


MAX_PROBLEMS = 20


def parse_body(request: Request, model: type[M]) -> M:
    """The JSON body as ``model``; 400 with a JSON pointer per problem otherwise. Size and nesting are
    checked before the text is parsed; pointers and messages carry no long user value."""
    raw = request.raw_body or b""
    if len(raw) > MAX_JSON_BYTES:
        raise TooLarge(f"request body of {len(raw)} bytes is over {MAX_JSON_BYTES // 1024} KiB")
    try:
        data = loads(raw or b"{}")
    except JsonTextError as exc:
        raise InvalidRequest(
            exc.message, errors=[{"pointer": exc.pointer, "message": exc.message}], hint="send a JSON object"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"pointer": pointer(*err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False, include_context=False)[
                :MAX_PROBLEMS
            ]
        ]
        summary = "; ".join(f"{p['pointer']}: {p['message']}" for p in problems[:3])
        raise InvalidRequest(f"invalid request body: {summary}", errors=problems) from None


MAX_VERSION_DIGITS = 9


def path_int(value: str, name: str) -> int:
    """A positive version number from the path: ASCII digits only (``'²'.isdigit()`` is true, and
    ``int()`` takes ``'٣'``), at most MAX_VERSION_DIGITS of them, so ``int()`` never sees 5,000 digits."""
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_VERSION_DIGITS) or int(value) < 1:
        raise InvalidRequest(
            f"{name} must be a positive integer of at most {MAX_VERSION_DIGITS} digits, got {short(value)}",
            errors=[{"pointer": f"/{name}", "message": "not a positive integer"}],
        )
    return int(value)


def path_name(value: str) -> str:
    """A model name from the path; one that breaks the naming rule (``core/config.py``'s SLUG) cannot
    exist, so it is answered as an unknown model is, without asking a store."""
    if not SLUG.match(value):
        raise NotFound(f"no model {short(value)}")
    return value


def caller(request: Request) -> Account:
    """The account the authorizer found; an invalid key is answered here so the body is ours."""
    context = (request.context or {}).get("authorizer") or {}
    if "unavailable" in context:
        raise Unavailable(context["unavailable"], hint="try again in a moment")
    if "account" not in context:
        raise Unauthorized(context.get("error", "missing or invalid API key"))
    return Account.model_validate_json(context["account"])


def query_param(request: Request, name: str) -> str | None:
    params = request.query_params
    value = params.get(name) if params is not None else None
    return value if isinstance(value, str) else None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    return Response(
        body=json.dumps(data),
        status_code=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


# --------------------------------------------------------------------------- OpenAPI

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_STATUS_TEXT = {
    301: "moved: see Location",
    400: "invalid request",
    401: "missing or invalid API key",
    403: "not allowed for this account",
    404: "not found (or not visible to this account)",
    409: "conflicts with the current state",
    413: "too large",
    503: "a backing service did not answer; try again",
}


def control_plane_openapi(title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "hint": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["code", "message"],
        }
    }

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    for op in sorted(OPERATIONS, key=lambda o: (o.path, o.method)):
        params = [
            {"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for seg in op.path.split("/")
            if seg.startswith("{")
        ] + [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "description": q.description,
                "schema": dict(q.schema),
            }
            for q in op.query
        ]
        entry: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": op.method.lower()
            + "".join(s.strip("{}").title().replace("-", "") for s in op.path.split("/")),
            "responses": {},
        }
        if params:
            entry["parameters"] = params
        if not op.auth:
            entry["security"] = []
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(op.body)}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if op.response is not None:
            schema = ref(op.response)
            if op.list_response:
                schema = {"type": "array", "items": schema}
            ok["content"] = {"application/json": {"schema": schema}}
        elif op.produces:
            ok["content"] = {media: {"schema": {"type": "string"}} for media in op.produces}
        entry["responses"][str(op.status)] = ok
        bad_input = op.body is not None or "{version}" in op.path  # a version that is not a number: 400
        codes = set(op.errors) | ({400} if bad_input else set()) | ({401, 503} if op.auth else set())
        for code in sorted(codes):
            entry["responses"][str(code)] = {
                "description": _STATUS_TEXT.get(code, "error"),
                "content": {"application/json": {"schema": _ERROR_REF}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }
