"""One exception family. Each error says what was wrong and what to do next.

The CLI maps them to exit codes (:attr:`KaonError.exit_code`) and the HTTP layer to
statuses (:attr:`KaonError.http_status`), each in one place.
"""

from __future__ import annotations


def one_line(message: str, hint: str | None) -> str:
    """A message and its hint as one sentence after another (the Open Inference Protocol's
    errors have a single string)."""
    if not hint:
        return message
    return f"{message} {hint}" if message.endswith((".", "!", "?")) else f"{message}. {hint}"


class KaonError(Exception):
    """Base class: a message for the user and an optional hint."""

    exit_code = 1
    http_status = 400

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\nHint: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


class ConfigError(KaonError):
    """A spec or settings file is invalid."""

    exit_code = 2
    http_status = 422


class NotFoundError(KaonError):
    """A dataset, run, model, version or alias does not exist."""

    exit_code = 3
    http_status = 404


class ConflictError(KaonError):
    """The request clashes with what exists: a taken name, the last owner, a finished job."""

    exit_code = 9
    http_status = 409


class DataError(KaonError):
    """A data file is corrupt, truncated or not in the expected format."""

    exit_code = 4
    http_status = 422


class SignatureError(KaonError):
    """An input does not match the model's input signature."""

    exit_code = 5
    http_status = 422


class UnavailableError(KaonError):
    """The service cannot answer yet (a model still loading) or any more (it failed to load)."""

    exit_code = 7
    http_status = 503


class PredictionError(KaonError):
    """The model raised on a request's input; other requests of its batch were served."""

    http_status = 500


class ArtifactError(KaonError):
    """A stored artifact is missing or not a file Kaon is willing to load."""

    exit_code = 6
    http_status = 500
