"""The offline proposal generator for SoCo: selective-search methods (``methods``, ``grouping``),
SoCo's filter (``filtering``), the resumable parallel run (``runner``: ``pool`` of worker
processes, ``chunks`` of finished images, the streaming ``merging`` into one file) and the import
of the official code's proposal JSON (``official_json``). It writes the formats that
``soco.data.proposals`` reads (the memory-mapped store, Detectron2's pickle); training imports
only that reader, never this package.

See ``proposals/README.md`` for the methods and the file format and ``tools/gen_proposals.py``
for the command line.
"""

from .filtering import FALLBACK_LEVELS, soco_filter
from .merging import merge
from .methods import DEFAULT_MAX_SIZE, DEFAULT_METHOD, METHODS
from .runner import generate, propose_file

__all__ = ["FALLBACK_LEVELS", "soco_filter", "DEFAULT_MAX_SIZE", "DEFAULT_METHOD", "METHODS", "generate", "merge",
           "propose_file"]
