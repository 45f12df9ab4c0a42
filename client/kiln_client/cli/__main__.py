"""``python -m kiln_client.cli``, the same as the ``kiln`` console script."""

from . import main

main()
