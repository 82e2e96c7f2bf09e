"""Parts shared by rankserve's servers: error mapping, health, ready files, shutdown, and
command-line flags derived from a settings class."""

from rankserve.server.common.errors import ErrorMappingInterceptor, status_code_for
from rankserve.server.common.health import HealthState
from rankserve.server.common.readyfile import announce_ready, write_ready_file
from rankserve.server.common.settings_cli import (
    add_settings_flags,
    run_with_settings,
    settings_from_args,
)
from rankserve.server.common.shutdown import drain_before_stop, run_until_signal

__all__ = [
    "ErrorMappingInterceptor",
    "HealthState",
    "add_settings_flags",
    "announce_ready",
    "drain_before_stop",
    "run_until_signal",
    "run_with_settings",
    "settings_from_args",
    "status_code_for",
    "write_ready_file",
]
