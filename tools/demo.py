#!/usr/bin/env python
"""End-to-end demo on the embedded data, on CPU: does pretraining help a detector? The same as
``python -m soco.demo.cli`` run from the repository root; ``--help`` and soco/demo/cli.py say more.

    python tools/demo.py            # about 9 minutes on 2 idle CPU cores: random init vs SoCo
    python tools/demo.py --quick    # a few minutes: every step, tiny budgets (a smoke test)
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # this checkout's soco, also where another one is installed

from soco.demo.cli import main, parse_methods  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main(output_root=REPO))  # default outputs under the checkout's output/
