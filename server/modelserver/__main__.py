"""``python -m rankserve.server.modelserver``: the model server's command line."""

from .cli import main

raise SystemExit(main())
