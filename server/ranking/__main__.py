"""``python -m rankserve.server.ranking``: the ranking server without the umbrella CLI."""

import sys

from rankserve.server.ranking.cli import main

sys.exit(main())
