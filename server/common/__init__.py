"""gRPC helpers shared by rankserve's servers: error mapping, health, ready files, shutdown."""

from rankserve.server.common.errors import ErrorMappingInterceptor, status_code_for
from rankserve.server.common.health import HealthState
from rankserve.server.common.readyfile import write_ready_file
from rankserve.server.common.shutdown import run_until_signal

__all__ = [
    "ErrorMappingInterceptor",
    "HealthState",
    "run_until_signal",
    "status_code_for",
    "write_ready_file",
]
