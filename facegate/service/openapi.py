"""The published surface of the API: its OpenAPI document and the interactive docs.

``install(app, settings)`` is called once by :func:`facegate.service.app.create_app`, after the
routers are included:

- **Error answers in the document.** Every ``/v1`` operation declares each status of
  :data:`facegate.service.schemas.PROBLEM_STATUSES` as ``application/problem+json`` with the
  :class:`~facegate.service.schemas.Problem` schema, in place of FastAPI's default 422
  (``HTTPValidationError``, which the API never answers: its 422 is a problem too). Clients
  generated from the document, and schemathesis' conformance checks
  (tests/security/test_schemathesis.py), then know every answer the API gives.
- **Interactive docs off by default.** ``/docs`` (Swagger UI) and ``/redoc`` load their
  JavaScript and CSS from a public CDN: a page of the identity service that runs third-party
  script in an operator's browser, next to an API key. They are served only with
  ``FACEGATE_API_DOCS=1`` (a development setting); otherwise they are 404.
  ``/openapi.json`` stays: it is static data, and the contract.
"""
from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI

from facegate.service.errors import PROBLEM_JSON
from facegate.service.schemas import PROBLEM_STATUSES, Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def problem_responses() -> dict[str, dict]:
    """The ``responses`` entries every /v1 operation declares."""
    return {str(status): {"description": HTTPStatus(status).phrase,
                          "content": {PROBLEM_JSON: {"schema": dict(_PROBLEM_REF)}}}
            for status in PROBLEM_STATUSES}


def declare_problems(schema: dict) -> dict:
    """Add the problem answers to every /v1 operation of an OpenAPI ``schema`` (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["Problem"] = problem_schema
    answers = problem_responses()
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith(("/v1/", "/console/api/")):
            continue
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].update({k: dict(v) for k, v in answers.items()})
    used = _refs(schema["paths"]) | _refs({k: v for k, v in components.items() if k not in _FASTAPI_VALIDATION})
    for name in _FASTAPI_VALIDATION:
        if f"#/components/schemas/{name}" not in used:
            components.pop(name, None)
    return schema


def _refs(node) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                found.add(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def install(app: FastAPI, settings) -> None:
    """Declare the problem answers in ``app``'s OpenAPI document and remove the interactive
    docs unless ``settings.api_docs``."""
    generate = app.openapi

    def openapi() -> dict:
        schema = generate()          # FastAPI's, cached until the routes change
        if "Problem" not in schema.get("components", {}).get("schemas", {}):
            declare_problems(schema)
        return schema

    app.openapi = openapi

    if not getattr(settings, "api_docs", False):
        hidden = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}
        app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in hidden]
        app.docs_url = app.redoc_url = app.swagger_ui_oauth2_redirect_url = None
