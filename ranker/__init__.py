"""The transport-free ranking core: route, retrieve, features, plan, score, merge.

Nothing here imports TensorFlow or server code; it talks to model servers only through the slim
TF-Serving wire protos in ``rankserve.tfserving.v1``.

Build one for the embedded catalog::

    scorer = PredictScorer("127.0.0.1:8500")
    ranker = Ranker.from_catalog(Catalog.open(path), scorer, RankerConfig())
    result = await ranker.rank(RankQuery(request_id="r1", query="red shoes"))
"""

from ranker.catalog import Catalog
from ranker.features import CatalogFeatureStore, FeatureStore
from ranker.pipeline import Ranker, RankerConfig
from ranker.planner import plan_batches
from ranker.routing import Router, RouteRule
from ranker.scoring import PredictScorer, Scorer
from ranker.types import ModelRef, RankQuery, RankResult

__all__ = [
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
