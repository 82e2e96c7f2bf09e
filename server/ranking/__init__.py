"""The ranking gRPC front door: settings, servicer, composition root and CLI."""

from server.ranking.app import RankingApp, run
from server.ranking.settings import RankerSettings

__all__ = ["RankerSettings", "RankingApp", "run"]
