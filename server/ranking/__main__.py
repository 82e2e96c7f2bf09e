"""``python -m server.ranking``: the ranking server without the umbrella CLI."""

import sys

from server.ranking.cli import main

sys.exit(main())
