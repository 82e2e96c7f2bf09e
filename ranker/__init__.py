"""The transport-free ranking core: route, retrieve, features, plan, score, merge.

Nothing here imports TensorFlow or server code; it talks to model servers only through the slim
TF-Serving wire protos in ``rankserve.tfserving.v1``.

Build one for the embedded catalog::

    scorer = PredictScorer("127.0.0.1:8500")
    ranker = Ranker.from_catalog(Catalog.open(path), scorer, RankerConfig())
    result = await ranker.rank(RankQuery(request_id="r1", query="red shoes"))
"""

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.features import CatalogFeatureStore, FeatureStore
from rankserve.ranker.pipeline import Ranker, RankerConfig
from rankserve.ranker.planner import plan_batches
from rankserve.ranker.retrieval import CandidateSource
from rankserve.ranker.routing import Router, RouteRule
from rankserve.ranker.scoring import PredictScorer, Scorer
from rankserve.ranker.types import ModelRef, RankQuery, RankResult

__all__ = [
    "CandidateSource",
    "Catalog",
    "CatalogFeatureStore",
    "FeatureStore",
    "ModelRef",
    "PredictScorer",
    "RankQuery",
    "RankResult",
    "Ranker",
    "RankerConfig",
    "RouteRule",
    "Router",
    "Scorer",
    "plan_batches",
]
