"""Domain errors of the ranking core.

Each carries a transport-neutral ``status`` name (a gRPC status code name) and a message written
for the caller: what was wrong and what to change. The server maps ``status`` to a gRPC code;
anything without one becomes INTERNAL with a generic message.
"""

from __future__ import annotations


class RankerError(Exception):
    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RankerError):
    status = "INVALID_ARGUMENT"


class NotFound(RankerError):
    status = "NOT_FOUND"


class DeadlineExceeded(RankerError):
    status = "DEADLINE_EXCEEDED"


class ResourceExhausted(RankerError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(RankerError):
    status = "UNAVAILABLE"


class ScoringError(RankerError):
    """A Predict call failed; ``status`` is the gRPC status name the model path answered."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
