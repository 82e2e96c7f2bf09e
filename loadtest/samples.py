"""Raw per-request results of one load-test run, before any statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Samples:
    """One entry per request sent. Times are seconds on the event loop's monotonic clock.

    ``due``: when the schedule said to send (closed loop: when it was sent); ``sent``: when it
    actually went out; ``done``: when the answer (or error) came back.
    """

    due: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    request_bytes: list[int] = field(default_factory=list)
    response_bytes: list[int] = field(default_factory=list)
    counted: list[bool] = field(default_factory=list)

    def add(self, due: float, sent: float, done: float, code: str, req: int, resp: int,
            counted: bool) -> None:
        self.due.append(due)
        self.sent.append(sent)
        self.done.append(done)
        self.code.append(code)
        self.request_bytes.append(req)
        self.response_bytes.append(resp)
        self.counted.append(counted)

    def __len__(self) -> int:
        return len(self.due)

    def arrays(self) -> dict[str, np.ndarray]:
        """The counted requests (warm-up left out) as arrays."""
        keep = np.asarray(self.counted, dtype=bool)
        return {
            "due": np.asarray(self.due, dtype=np.float64)[keep],
            "sent": np.asarray(self.sent, dtype=np.float64)[keep],
            "done": np.asarray(self.done, dtype=np.float64)[keep],
            "code": np.asarray(self.code, dtype=object)[keep],
            "request_bytes": np.asarray(self.request_bytes, dtype=np.int64)[keep],
            "response_bytes": np.asarray(self.response_bytes, dtype=np.int64)[keep],
        }
