"""``python -m soco.demo``: the end-to-end demo (the same as tools/demo.py; ``--help``)."""

import sys

from .cli import main

sys.exit(main())
