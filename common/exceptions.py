"""The error vocabulary: services raise ApplicationError (or Django ValidationError), never HTTP errors.

common.api.exception_handler turns both into the one JSON error contract of the API:
    {"error": {"code": "<machine_code>", "message": "<human text>", "field": "<field or null>"}}
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A business rule refused the action. `code` is stable and machine-readable; `field` names the input at fault."""

    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid",
        field: str | None = None,
        extra: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.extra = extra or {}
        if status_code is not None:
            self.status_code = status_code  # e.g. 409 for a conflict with an earlier message


class TransitionError(ApplicationError):
    """The object is not in a state that allows the requested transition."""

    status_code = 409

    def __init__(self, message: str, *, code: str = "invalid_state", extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, code=code, field="status", extra=extra)


class AdapterError(Exception):
    """An outbound protocol call failed. `permanent` tells a caller whether a retry can help."""

    def __init__(self, message: str, *, permanent: bool = False, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status_code = status_code
