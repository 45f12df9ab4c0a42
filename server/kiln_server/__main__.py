"""``python -m kiln_server`` is ``kiln-server``."""

import sys

from .cli import main

sys.exit(main())
