"""The server's error envelope, `{"error": {"code", "message", "request_id"}}`, as exceptions."""

from __future__ import annotations

import json
from collections.abc import Mapping


class DropserveError(Exception):
    """A refusal from the server: its HTTP status, error code, message and request id."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after_s = retry_after_s  # from Retry-After, when the server sent one

    def __str__(self) -> str:
        where = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.status} {self.code}: {self.message}{where}"


class BadRequest(DropserveError):
    """400: a malformed body."""


class Unauthorized(DropserveError):
    """401: a missing or wrong API (or admin) key."""


class NotFound(DropserveError):
    """404: no such model, version or route."""


class RequestTimeout(DropserveError):
    """408: the body did not arrive in time."""


class PayloadTooLarge(DropserveError):
    """413: too large a body, image, instance count or answer."""


class UnsupportedMediaType(DropserveError):
    """415: a content type the server does not decode."""


class InvalidValue(DropserveError):
    """422: values out of range, the wrong shape, non-numbers."""


class Unavailable(DropserveError):
    """503: overloaded or not ready; `retry_after_s` says when to try again."""


_BY_STATUS: dict[int, type[DropserveError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    408: RequestTimeout,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidValue,
    503: Unavailable,
}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (the server sends delay-seconds, never a date)."""
    value = headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> DropserveError:
    """The exception for an error answer; a body that is not the envelope (a proxy's page) is
    quoted in the message."""
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
        request_id = error.get("request_id")
    except (ValueError, KeyError, TypeError):
        code, message, request_id = "http_error", body[:300].decode("utf-8", "replace") or "(no body)", None
    exception = _BY_STATUS.get(status, DropserveError)
    return exception(
        status, code, message, request_id or headers.get("x-request-id"), retry_after_seconds(headers)
    )
