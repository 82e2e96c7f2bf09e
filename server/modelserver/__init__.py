"""A TF-Serving-compatible gRPC model server for TensorFlow SavedModels.

Importing the package is cheap; ``ModelServerApp`` and ``run`` pull in TensorFlow when first
used, so the ``rankserve`` command line can register the subcommand without loading it.

    settings = ModelServerSettings(model_name="ranker", model_base_path="/models/ranker", port=0)
    app = ModelServerApp(settings); port = await app.start(); ...; await app.stop()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import ModelServerApp, run
    from .settings import ModelServerSettings

__all__ = ["ModelServerApp", "ModelServerSettings", "run"]


def __getattr__(name: str):
    if name in ("ModelServerApp", "run"):
        from . import app

        return getattr(app, name)
    if name == "ModelServerSettings":
        from .settings import ModelServerSettings

        return ModelServerSettings
    raise AttributeError(name)
