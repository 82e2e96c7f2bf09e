"""Domain errors of the model server.

Each error names the gRPC status code it maps to in ``status`` and carries a message written for
the caller: what was wrong and what to change. Only the error-mapping interceptor of
``rankserve.server.common.errors`` turns these into gRPC statuses, so the core never imports
grpc; anything that is not a ``ModelServerError`` becomes INTERNAL with a generic message and
its detail goes to the log.
"""

from __future__ import annotations


class ModelServerError(Exception):
    """Base class: an error the caller may see, with its gRPC status code name."""

    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelServerError):
    """The request does not match the signature (names, dtypes, shapes, values)."""

    status = "INVALID_ARGUMENT"


class TooLarge(ModelServerError):
    """The request would make the server allocate more than it accepts (gRPC's own status for a
    message over the size limit)."""

    status = "RESOURCE_EXHAUSTED"


class Overloaded(ModelServerError):
    """The version's queue is full (TF Serving's max_enqueued_batches): refused at once, with
    how long the queue takes to drain as the retry hint."""

    status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class NotFound(ModelServerError):
    """Unknown model, version or label; the message lists what is available."""

    status = "NOT_FOUND"


class Unavailable(ModelServerError):
    """The model is configured but no version of it is loaded yet."""

    status = "UNAVAILABLE"


class Unimplemented(ModelServerError):
    """A TF Serving method this server does not provide."""

    status = "UNIMPLEMENTED"


class ProfilerBusy(ModelServerError):
    """A profile was asked for while another one is being captured (one per process)."""

    status = "ABORTED"


class LoadFailed(ModelServerError):
    """A version could not be loaded or warmed up; shown in GetModelStatus, never to Predict."""

    def __init__(self, message: str, status: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.status = status


class ConfigError(ModelServerError):
    """The model configuration (flags or config file) cannot be used."""

    status = "INVALID_ARGUMENT"


class SignatureNotFound(ModelServerError):
    """The version has no signature of that name (TF Serving answers FAILED_PRECONDITION)."""

    status = "FAILED_PRECONDITION"
