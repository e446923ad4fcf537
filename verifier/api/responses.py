"""The error responses the StarCard services declare in their OpenAPI schemas.

Every error body is ``{"detail": ...}``: a sentence saying what to fix, or (422 from request
validation) FastAPI's list of field errors. Both apps pass :data:`ERROR_RESPONSES` to
``FastAPI(responses=...)`` so that every operation documents the statuses its dependencies
(authentication, rate limit) and the exception handlers may return.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ERROR_RESPONSES", "ErrorOut"]


class ErrorOut(BaseModel):
    """An error: ``detail`` says what to fix (a list of field errors for invalid input)."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[dict[str, Any]]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the request body could not be parsed"),
    401: _error("credentials missing or not accepted"),
    403: _error("authenticated, but not allowed to do this"),
    404: _error("no such resource"),
    409: _error("conflicts with the current state"),
    422: _error("the request is invalid; detail says what to fix"),
    429: _error("too many requests: wait Retry-After seconds"),
    503: _error("a backing service is unreachable: retry after Retry-After seconds"),
}
