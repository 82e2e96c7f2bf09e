"""One way for every deployable's command line to report settings it cannot accept."""

from __future__ import annotations

import sys

from pydantic import ValidationError


def report_invalid_settings(prog: str, exc: ValidationError) -> int:
    """Prints ``prog: field: problem`` per invalid setting (no traceback); returns exit code 2."""
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        print(f"{prog}: {where}: {error['msg']}", file=sys.stderr)
    return 2
