"""The demo world: a synthetic catalog, its hidden relevance, and a ranking model trained on it.

Importing this package loads numpy only; TensorFlow loads in ``rankserve.demo.model`` when a
model is trained or loaded. Build names resolve lazily so ``python -m rankserve.demo.build`` runs
cleanly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rankserve.demo.candidates import RETRIEVE_K, CandidateMaker, Retrieved
from rankserve.demo.evaluate import EVAL_SEED, Evaluation, evaluate
from rankserve.demo.quality import (
    dcg_at_k,
    model_order,
    ndcg_at_k,
    ndcg_of_ids,
    ndcg_of_rows,
    random_order,
    retrieval_order,
)
from rankserve.demo.queries import SAMPLE_REQUESTS, DemoRequest, random_requests
from rankserve.demo.relevance import Truth, grades, utility
from rankserve.demo.synth import World, generate

if TYPE_CHECKING:
    from rankserve.demo.build import DemoPaths, default_home, ensure_demo, export_version

_BUILD_NAMES = ("DemoPaths", "default_home", "ensure_demo", "export_version")

__all__ = [
    "EVAL_SEED",
    "RETRIEVE_K",
    "SAMPLE_REQUESTS",
    "CandidateMaker",
    "DemoPaths",
    "DemoRequest",
    "Evaluation",
    "Retrieved",
    "Truth",
    "World",
    "dcg_at_k",
    "default_home",
    "ensure_demo",
    "evaluate",
    "export_version",
    "generate",
    "grades",
    "model_order",
    "ndcg_at_k",
    "ndcg_of_ids",
    "ndcg_of_rows",
    "random_order",
    "random_requests",
    "retrieval_order",
    "utility",
]


def __getattr__(name: str) -> Any:
    if name in _BUILD_NAMES:
        from rankserve.demo import build

        return getattr(build, name)
    raise AttributeError(f"module 'demo' has no attribute {name!r}")
