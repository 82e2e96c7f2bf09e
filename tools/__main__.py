import sys

from rankserve.tools.cli import main

sys.exit(main())
