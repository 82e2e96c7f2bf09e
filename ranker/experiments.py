"""Experiments: a stable split of users between arms, and an optional shadow arm.

A user's arm is a pure function of (experiment name, salt, user id): SHA-256 of those, read as a
number in [0, 1), falls into the arm whose cumulative weight range holds it. So a user sees the
same arm on every request and every ranker replica without any shared state, and a new salt
reshuffles everyone. Requests without a user id go to the first arm (the control) so anonymous
traffic never makes an arm's numbers noisy.

A shadow arm scores a copy of the arm's candidates with another model after the response is
built; its result and its failures are only counted, never returned.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

from rankserve.ranker.types import ModelRef


@dataclass(frozen=True)
class Arm:
    name: str
    model: ModelRef
    weight: float = 1.0


@dataclass(frozen=True)
class Experiment:
    name: str
    arms: tuple[Arm, ...]
    salt: str = ""
    shadow: Arm | None = None
    _cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.arms:
            raise ValueError(f"experiment '{self.name}' has no arms")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment '{self.name}': arm names repeat: {names}")
        if any(a.weight < 0 for a in self.arms):
            raise ValueError(f"experiment '{self.name}': arm weights must be >= 0")
        total = sum(a.weight for a in self.arms)
        if total <= 0:
            raise ValueError(f"experiment '{self.name}': arm weights sum to 0")
        object.__setattr__(
            self, "_cumulative", tuple(c / total for c in accumulate(a.weight for a in self.arms)))

    def assign(self, user_id: str) -> Arm:
        """The user's arm; the first arm for anonymous traffic."""
        if not user_id:
            return self.arms[0]
        i = bisect_right(self._cumulative, unit_hash(self.name, self.salt, user_id))
        return self.arms[min(i, len(self.arms) - 1)]


def unit_hash(experiment: str, salt: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by its inputs (53 bits of SHA-256)."""
    digest = hashlib.sha256(f"{experiment}\0{salt}\0{user_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)
