"""``python -m edgeagent``: the same as the ``edgeagent`` command."""

import sys

from edgeagent.cli import main

sys.exit(main())
