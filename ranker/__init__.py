"""The transport-free ranking core: route, retrieve, features, plan, score, merge.

Nothing here imports TensorFlow or server code; it talks to model servers only through the slim
TF-Serving wire protos in ``rankserve.tfserving.v1``.

What a model is fed comes from its feature spec; where features come from is an
``EntityFeatures`` store per entity kind; where candidates come from is a ``CandidateSource``
(or the caller)::

    inputs = InputAssembler(load_spec("spec.yaml"), items=item_store, users=user_store)
    ranker = Ranker(RankerConfig(), retriever=None, inputs=inputs,
                    scorer=PredictScorer("127.0.0.1:8500"), caller_source=CallerCandidates)
    result = await ranker.rank(RankQuery(request_id="r1", candidates=...))
"""

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.entity_features import EntityFeatures, FeatureInfo, Fetched
from rankserve.ranker.model_inputs import InputAssembler, ModelInputs
from rankserve.ranker.pipeline import Ranker, RankerConfig
from rankserve.ranker.planner import plan_batches
from rankserve.ranker.retrieval import CandidateSource
from rankserve.ranker.routing import Router, RouteRule
from rankserve.ranker.scoring import PredictScorer, Scorer
from rankserve.ranker.spec import FeatureSpec, load_spec
from rankserve.ranker.types import ModelRef, RankQuery, RankResult

__all__ = [
    "CandidateSource",
    "Catalog",
    "EntityFeatures",
    "FeatureInfo",
    "FeatureSpec",
    "Fetched",
    "InputAssembler",
    "ModelInputs",
    "ModelRef",
    "PredictScorer",
    "RankQuery",
    "RankResult",
    "Ranker",
    "RankerConfig",
    "RouteRule",
    "Router",
    "Scorer",
    "load_spec",
    "plan_batches",
]
