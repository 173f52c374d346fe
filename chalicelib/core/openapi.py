"""OpenAPI 3.1 for one model's invoke endpoints, derived from the model config file (never stored)."""

from __future__ import annotations

from typing import Any

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.protocol import Wire

_ERROR = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "hint": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "pointer": {"type": "string", "description": "JSON pointer into the request"},
                    "row": {"type": "integer", "description": "CSV or rows: the row (from 1)"},
                    "column": {"type": "string", "description": "CSV or rows: the feature"},
                    "message": {"type": "string"},
                },
                "required": ["message"],
            },
        },
    },
    "required": ["code", "message"],
}

_OIP_TENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
    "required": ["name", "datatype", "shape", "data"],
}


def _content(wire: Wire) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for media in wire.content_types:
        if media == "application/json":
            content[media] = {"schema": wire.json_schema, "example": wire.example}
        elif media == "text/csv":
            content[media] = {"schema": {"type": "string", "description": "CSV rows; an optional header row"}}
        else:
            content[media] = {"schema": {"type": "string", "contentMediaType": media}}
    return content


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _oip_paths(name: str, manifest: ModelConfigFile, errors: dict[str, Any]) -> dict[str, Any]:
    """The Open Inference Protocol v2 routes: model metadata and inference."""
    oip_request = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/OipTensor"}},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "parameters": {"type": "object"},
        },
        "required": ["inputs"],
    }
    return {
        f"/v2/models/{name}": {
            "get": {
                "summary": "Open Inference Protocol v2 model metadata",
                "operationId": "oipMetadata",
                "responses": {
                    "200": {
                        "description": "model metadata",
                        "content": {
                            "application/json": {"example": manifest.protocol.oip.model_dump(mode="json")}
                        },
                    },
                    **{code: errors[code] for code in ("401", "404", "503")},
                },
            }
        },
        f"/v2/models/{name}/infer": {
            "post": {
                "summary": "Open Inference Protocol v2 inference",
                "operationId": "oipInfer",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": oip_request}},
                },
                "responses": {
                    "200": {
                        "description": "inference response",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **errors,
                },
            }
        },
    }


def _elsewhere(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Location": {"description": "where to go next", "schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def openapi_document(manifest: ModelConfigFile) -> dict[str, Any]:
    proto = manifest.protocol
    errors = {
        "400": _error("the request does not match the model's protocol"),
        "401": _error("missing or invalid API key"),
        "404": _error("no such model or version (or not visible to this account)"),
        "406": _error("no acceptable response content type"),
        "409": _error("the version is not READY (still deploying, or FAILED)"),
        "413": _error("the request or its answer is over Lambda's limit"),
        "415": _error("unsupported request content type"),
        "422": _error("the model's result for this input is NaN or infinite (beyond its arithmetic)"),
        "502": _error("the model failed while predicting"),
        "503": _error("a backing service did not answer; try again"),
        "504": _error("the model ran out of time"),
    }
    invoke = {
        "summary": f"Invoke {manifest.name}",
        "description": manifest.description or f"Run {manifest.name} on one request.",
        "operationId": "invoke",
        "requestBody": {"required": True, "content": _content(proto.request)},
        "responses": {
            "200": {"description": "the prediction", "content": _content(proto.response)},
            "202": _elsewhere(
                "run as a job (asked with `Prefer: respond-async`, or a call that may outlive the API's "
                "29 s and did not end in time): GET the job at Location until it is done"
            ),
            "303": _elsewhere("the answer is past what a response carries: fetch it from Location"),
            **errors,
        },
    }
    versioned = dict(invoke, operationId="invokeVersion")
    name = manifest.name
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{name} (Modelport)",
            "version": str(manifest.version),
            "description": manifest.description,
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": {
            f"/v1/models/{name}/invoke": {"post": invoke},
            f"/v1/models/{name}/versions/{{version}}/invoke": {
                "parameters": [
                    {
                        "name": "version",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    }
                ],
                "post": versioned,
            },
            **_oip_paths(name, manifest, errors),
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR, "OipTensor": _OIP_TENSOR},
        },
    }
