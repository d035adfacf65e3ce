"""``python -m lightning_siamese``: the same entry point as the console script."""

import sys

from lightning_siamese.cli.main import main

sys.exit(main())
