"""The demo's fixed word lists: readable query tokens, item attributes, tags, devices, locales.

Fixed in code, not sampled, so titles and queries read the same on every machine.
"""

from __future__ import annotations

COLOURS = (
    "red", "blue", "green", "black", "white", "grey", "brown", "navy", "beige", "pink",
    "purple", "yellow", "orange", "teal", "olive", "maroon", "cream", "silver", "gold",
    "charcoal",
)  # fmt: skip

STYLES = (
    "vintage", "modern", "classic", "minimalist", "rustic", "casual", "formal", "sporty",
    "boho", "retro", "elegant", "urban", "outdoor", "cozy", "slim", "oversized", "handmade",
    "luxury", "compact", "lightweight", "waterproof", "premium", "travel", "kids",
)  # fmt: skip

# Product groups: each names its nouns and the materials that make sense for them, so titles
# read like "rustic oak table" rather than "silk kettle".
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "apparel": (
        ("jacket", "coat", "shirt", "dress", "skirt", "sweater", "hoodie", "jeans", "shorts",
         "blazer", "vest", "scarf", "hat", "cap", "gloves", "socks"),
        ("cotton", "wool", "linen", "denim", "silk", "cashmere", "velvet", "polyester", "nylon"),
    ),
    "accessories": (
        ("bag", "backpack", "wallet", "belt", "watch", "sunglasses", "umbrella", "tote"),
        ("leather", "suede", "canvas", "nylon", "steel"),
    ),
    "footwear": (
        ("boots", "sneakers", "sandals", "loafers", "slippers"),
        ("leather", "suede", "canvas", "wool"),
    ),
    "furniture": (
        ("chair", "table", "sofa", "shelf", "desk", "mirror", "lamp"),
        ("oak", "walnut", "bamboo", "steel", "glass", "velvet"),
    ),
    "textiles": (
        ("rug", "pillow", "blanket", "curtain", "basket"),
        ("cotton", "wool", "linen", "velvet", "bamboo"),
    ),
    "kitchen": (
        ("mug", "teapot", "kettle", "bowl", "vase", "candle"),
        ("ceramic", "glass", "steel", "bamboo"),
    ),
    "tech": (
        ("headphones", "speaker", "keyboard", "mouse", "charger", "tablet stand"),
        ("aluminium", "steel", "plastic", "bamboo"),
    ),
    "outdoor": (
        ("tent", "bottle", "hammock", "lantern", "sleeping bag"),
        ("nylon", "canvas", "polyester", "steel"),
    ),
}  # fmt: skip


def _nouns() -> tuple[str, ...]:
    out: list[str] = []
    for nouns, _ in GROUPS.values():
        # Two-word nouns ("sleeping bag") keep only their last word as the token.
        out.extend(n.split()[-1] for n in nouns if n.split()[-1] not in out)
    return tuple(out)


def _materials() -> tuple[str, ...]:
    out: list[str] = []
    for _, materials in GROUPS.values():
        out.extend(m for m in materials if m not in out)
    return tuple(out)


NOUNS = _nouns()
MATERIALS = _materials()
# Every query token, in a fixed order (the catalog's vocab.txt). Words of two-word nouns
# ("sleeping", "stand") are tokens too so that whole titles tokenize.
EXTRA_TOKENS = ("sleeping", "tablet", "stand")
VOCAB = tuple(dict.fromkeys(COLOURS + MATERIALS + NOUNS + STYLES + EXTRA_TOKENS))

TAGS = (
    "bestseller", "new_arrival", "eco", "sale", "limited", "refurbished", "gift", "clearance",
    "exclusive", "bundle", "free_shipping", "staff_pick", "fair_trade", "recycled",
    "imported", "last_units", "preorder", "award", "seasonal", "vegan", "organic", "warranty",
    "local", "made_to_order",
)  # fmt: skip

DEVICES = ("desktop", "mobile", "tablet")
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "ja-JP")
