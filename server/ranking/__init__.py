"""The ranking gRPC front door: settings, servicer, composition root and CLI."""

from rankserve.server.ranking.app import RankingApp, run
from rankserve.server.ranking.settings import RankerSettings

__all__ = ["RankerSettings", "RankingApp", "run"]
