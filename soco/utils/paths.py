"""Where this soco package lives."""

import os

__all__ = ["PACKAGE_PARENT"]

# The folder holding the ``soco`` package: the checkout in a source tree (with setup.py and
# configs/ beside the package), site-packages for an installed wheel.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
