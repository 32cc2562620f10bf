"""The OpenAPI 3.1 document, generated: paths from the router and each handler's `@describe`,
schemas from the contract's models (app/contract.py). Nothing in it is written twice."""

import copy
import functools
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

import app
from app.api import contract

SCHEMA_REF = "#/components/schemas/{name}"
_Handler = TypeVar("_Handler", bound=Handler)


@dataclass(frozen=True)
class Reply:
    description: str
    model: type[msgspec.Struct] | None = None  # None: the error object for 4xx/5xx, a plain object for JSON 2xx
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    summary: str
    replies: dict[int, Reply]
    body: type[msgspec.Struct] | None = None
    query: type[msgspec.Struct] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    public: bool = False  # no token needed even when tokens are configured


class Described(Protocol):
    """A handler with its OpenAPI operation attached (by @describe)."""

    operation: Operation

    def __call__(self, request: web.Request, /) -> Awaitable[web.StreamResponse]: ...


def describe(
    summary: str,
    replies: dict[int, Reply],
    *,
    body: type[msgspec.Struct] | None = None,
    query: type[msgspec.Struct] | None = None,
    headers: dict[str, str] | None = None,
    public: bool = False,
) -> Callable[[_Handler], _Handler]:
    """Attach the handler's OpenAPI operation to it."""

    def mark(handler: _Handler) -> _Handler:
        # A function attribute, which a Callable type cannot declare: set through the function's __dict__.
        vars(handler)["operation"] = Operation(summary, replies, body, query, headers or {}, public)
        return handler

    return mark


def _is_described(handler: object) -> TypeGuard[Described]:
    return hasattr(handler, "operation")


def operations(router: web.UrlDispatcher) -> Iterator[tuple[str, str, Described]]:
    """(path, METHOD, handler) of every described route; the web page's routes have none."""
    for resource in router.resources():
        for route in resource:
            if _is_described(route.handler) and route.method != "HEAD":
                yield resource.canonical, route.method, route.handler


def _content(reply: Reply, status: int) -> dict[str, Any]:
    if reply.content_type != "application/json":
        schema = {"type": "string", "format": "binary"} if reply.content_type == "*/*" else {"type": "string"}
    elif reply.model is not None:
        schema = {"$ref": SCHEMA_REF.format(name=reply.model.__name__)}
    elif status >= 400:
        schema = {"$ref": SCHEMA_REF.format(name="Error")}
    else:
        schema = {"type": "object"}
    return {reply.content_type: {"schema": schema}}


def _response(reply: Reply, status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": reply.description}
    if status not in (303,):
        response["content"] = _content(reply, status)
    if reply.headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in reply.headers.items()
        }
    return response


def _parameters(path: str, operation: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if operation.query is not None:
        properties = copy.deepcopy(components[operation.query.__name__]["properties"])
        for name, schema in properties.items():
            description = schema.pop("description", None)
            schema.pop("default", None)
            if "anyOf" in schema:  # optional: "or null" is how an absent parameter reads
                schema = next(option for option in schema["anyOf"] if option.get("type") != "null")
            parameter = {"name": name, "in": "query", "schema": schema}
            if description:
                parameter["description"] = description
            parameters.append(parameter)
    parameters += [
        {"name": name, "in": "header", "description": text, "schema": {"type": "string"}}
        for name, text in operation.headers.items()
    ]
    return parameters


@functools.cache
def _build(routes: tuple[tuple[str, str, Described], ...]) -> bytes:
    described = [(path, method, handler.operation) for path, method, handler in routes]
    models: set[type[msgspec.Struct]] = {*contract.MODELS}
    models.update(op.query for _, _, op in described if op.query is not None)
    _, components = msgspec.json.schema_components(sorted(models, key=lambda m: m.__name__), ref_template=SCHEMA_REF)
    paths: dict[str, dict[str, Any]] = {}
    for path, method, operation in described:
        item: dict[str, Any] = {"summary": operation.summary, "responses": {}}
        parameters = _parameters(path, operation, components)
        if parameters:
            item["parameters"] = parameters
        if operation.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(name=operation.body.__name__)}}},
            }
        if operation.public:
            item["security"] = []
        else:
            item["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
        for status, reply in sorted(operation.replies.items()):
            item["responses"][str(status)] = _response(reply, status)
        paths.setdefault(path, {})[method.lower()] = item
    for model in {op.query for _, _, op in described if op.query is not None}:
        del components[model.__name__]  # described as parameters, not as a body
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "video-download-api",
            "version": app.__version__,
            "description": "Downloads a video URL with yt-dlp in the background, optionally extracts the audio with "
            "FFmpeg, reports progress and serves the files. With tokens configured every /api/* request except "
            "/api/health needs `Authorization: Bearer <token>`; a user's token sees only that user's tasks and "
            "files (another user's answer 404), an admin's every task.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Unauthorized": _response(Reply("No or wrong bearer token."), 401)},
            "schemas": components,
        },
    }
    return msgspec.json.encode(document)


def document(router: web.UrlDispatcher) -> bytes:
    """The document as JSON bytes, built once per route table."""
    return _build(tuple(operations(router)))
