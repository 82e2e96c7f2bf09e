"""Demo requests: a few hand-written ones to show, and seeded random ones to evaluate with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankserve.demo import vocab
from rankserve.demo.ids import item_id, user_id


@dataclass(frozen=True)
class DemoRequest:
    """The request fields that matter to retrieval, the model and the hidden relevance."""

    query: str = ""
    user_id: str = ""
    user_known: bool = False
    device: str = "desktop"
    locale: str = "en-US"
    viewed_item_ids: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"query={self.query!r}" if self.query else "no query"]
        if self.user_id:
            parts.append(f"{'known' if self.user_known else 'unknown'} user {self.user_id}")
        else:
            parts.append("anonymous")
        parts.append(f"{self.device}/{self.locale}")
        if self.viewed_item_ids:
            parts.append(f"viewing {', '.join(self.viewed_item_ids)}")
        return ", ".join(parts)


SAMPLE_REQUESTS: tuple[DemoRequest, ...] = (
    DemoRequest(query="red leather bag", device="desktop", locale="en-US"),
    DemoRequest(user_id=user_id(42), user_known=True, device="desktop", locale="en-GB"),
    DemoRequest(query="waterproof hiking boots", user_id="guest-7f3a", device="mobile",
                locale="de-DE"),
    DemoRequest(query="oak table", user_id=user_id(1234), user_known=True, device="tablet",
                locale="fr-FR", viewed_item_ids=(item_id(123), item_id(4567))),
    DemoRequest(query="cozy wool blanket", device="mobile", locale="ja-JP"),
)  # fmt: skip


def random_requests(n: int, *, seed: int, num_items: int, num_users: int) -> list[DemoRequest]:
    """A seeded mix of the traffic the ranker sees: queries of one to four words, known and
    unknown users, viewed items, every device and locale."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words: list[str] = []
        if rng.random() < 0.8:
            # Built like titles are (style, colour, material, noun), each part optional.
            if rng.random() < 0.3:
                words.append(str(rng.choice(vocab.STYLES)))
            if rng.random() < 0.6:
                words.append(str(rng.choice(vocab.COLOURS)))
            group = list(vocab.GROUPS.values())[rng.integers(len(vocab.GROUPS))]
            if rng.random() < 0.5:
                words.append(str(rng.choice(group[1])))
            if rng.random() < 0.85 or not words:
                words.append(str(rng.choice(group[0])))
        r = rng.random()
        if r < 0.5:
            uid, known = user_id(int(rng.integers(num_users))), True
        elif r < 0.8:
            uid, known = f"guest-{int(rng.integers(1 << 16)):04x}", False
        else:
            uid, known = "", False
        viewed: tuple[str, ...] = ()
        if rng.random() < 0.25:
            viewed = tuple(
                item_id(int(x)) for x in rng.integers(num_items, size=rng.integers(1, 4))
            )
        if not words and not uid and not viewed:
            # The API rejects a request that says nothing; traffic like that comes from a new
            # visitor with a fresh id (same context vector, so training data is unchanged).
            uid = "guest-new"
        device = str(rng.choice(vocab.DEVICES, p=[0.45, 0.45, 0.10]))
        locale = str(rng.choice(vocab.LOCALES))
        out.append(DemoRequest(" ".join(words), uid, known, device, locale, viewed))
    return out
