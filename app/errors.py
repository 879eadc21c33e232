"""Expected failures carry an HTTP status and a stable machine `code`; one handler renders them.

    RelayError                 anything the API answers with a problem+json document
      NotFoundError            404
      ConflictError            409
      InvalidInputError        422

Services raise these; only `app.api` turns them into responses.
"""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """An expected failure with its HTTP status, stable `code`, short title and detail."""

    status: int = 400
    title: str = "Bad request"

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        self.extra = extra or {}
        self.headers = headers or {}


class NotFoundError(RelayError):
    """The resource does not exist (404)."""

    status = 404
    title = "Not Found"


class ConflictError(RelayError):
    """The resource is not in a state that allows this request (409)."""

    status = 409
    title = "Conflict"


class InvalidInputError(RelayError):
    """The request is well-formed but its content cannot be accepted (422)."""

    status = 422
    title = "Unprocessable Entity"


class UnauthorizedError(RelayError):
    """No valid API key was presented (401)."""

    status = 401
    title = "Unauthorized"


class ForbiddenError(RelayError):
    """The API key is valid but not for this tenant (403)."""

    status = 403
    title = "Forbidden"
