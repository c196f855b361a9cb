"""``python -m simulation.cli``: the ``secagg`` console script."""

import sys

from . import main

sys.exit(main())
