"""The engine's own refusals; the HTTP layer maps each to a status in one place (service/http/errors)."""

from __future__ import annotations


class EngineError(Exception):
    """A refusal the engine explains; `message` says what was wrong and what to do instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotReady(EngineError):
    """No model is loaded yet."""


class UnknownModel(EngineError):
    """No such model, or no such version of it."""


class RepositoryUnavailable(EngineError):
    """The model repository's folder is gone or unreadable; the versions held stay served."""


class Overloaded(EngineError):
    """The queue is full, or a request waited past the bound: retry shortly."""


class TimedOut(Overloaded):
    """A request ran past the request timeout; its computation was stopped."""


class Stopping(Overloaded):
    """The engine is shutting down and takes no new work."""
