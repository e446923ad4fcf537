"""Shared runner for the Schemathesis tests of both services (``test_schemathesis_*``).

``fuzz`` loads the OpenAPI schema from the ASGI app, generates a few derandomized cases per
operation (CI repeats the same cases) and runs every case through the app with the checks
below; it returns one line per failing operation so a test can assert the list is empty and
show all of them at once. ``auth_dependants`` finds the routes that depend on an auth
dependency, from FastAPI's own dependency tree (not from heuristics on the schema), for the
explicit "no credentials → 401" tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import requests
import schemathesis
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, Phase
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]


def fuzz(
    app: FastAPI,
    session_for: Callable[[str, str], requests.Session],
    *,
    max_examples: int,
    seen: dict[str, set[int]] | None = None,
) -> list[str]:
    """Runs ``max_examples`` generated cases per operation (``session_for(method, path)``
    supplies its credentials); returns "METHOD path: failure" lines. ``seen`` collects the
    status codes per "METHOD path" (to check that the credentials were accepted)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        codes = set() if seen is None else seen.setdefault(label, set())
        try:
            _run(
                operation,
                session_for(operation.method.upper(), operation.path),
                max_examples,
                codes,
            )
        except (Exception, BaseExceptionGroup) as exc:  # FailureGroup is an exception group
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:1500]}")
    return failures


def _run(operation: Any, session: requests.Session, max_examples: int, codes: set[int]) -> None:
    @hypothesis.settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy())
    def run(case: Any) -> None:
        codes.add(case.call_and_validate(session=session, checks=CHECKS).status_code)

    run()


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def auth_dependants(app: FastAPI, is_auth: Callable[[Any], bool]) -> dict[tuple[str, str], bool]:
    """``{(method, path): protected}`` for every API route; protected when some dependency
    in its tree satisfies ``is_auth``."""
    found: dict[tuple[str, str], bool] = {}
    for context in iter_route_contexts(app.routes):  # also the routes of included routers
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        protected = any(is_auth(call) for call in _calls(route.dependant))
        for method in context.methods or ():
            found[(method, str(context.path))] = protected
    return found


def concrete(path: str) -> str:
    """``path`` with every ``{parameter}`` (also ``{p:path}``) replaced by ``1``."""
    return re.sub(r"\{[^}]+\}", "1", path)
