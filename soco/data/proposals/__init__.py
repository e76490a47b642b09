"""Selective-search proposals for SoCo: generation methods, SoCo's filter, file formats (the
memory-mapped store and Detectron2's pickle), runner.

See ``proposals/README.md`` for the file format and ``tools/gen_proposals.py`` for the CLI.
Reading a proposal file (``load_proposals``, what training needs) imports only the file format:
the generator's names (``methods``, ``runner``: OpenCV, multiprocessing, tqdm) are imported on
first use (PEP 562 module ``__getattr__``).
"""
import importlib

from .file_format import ProposalFile, load_proposals, open_proposals, read_proposal_file, save_proposals
from .store import ProposalStore, StoreError

__all__ = ["ProposalFile", "ProposalStore", "StoreError", "load_proposals", "open_proposals", "read_proposal_file",
           "save_proposals", "FALLBACK_LEVELS", "soco_filter",
           "DEFAULT_MAX_SIZE", "DEFAULT_METHOD", "METHODS", "generate", "merge", "propose_file"]

# Name -> sub-module defining it, for the names imported on first use.
_GENERATOR_NAMES = {
    "FALLBACK_LEVELS": "filtering",
    "soco_filter": "filtering",
    "DEFAULT_MAX_SIZE": "methods",
    "DEFAULT_METHOD": "methods",
    "METHODS": "methods",
    "generate": "runner",
    "merge": "runner",
    "propose_file": "runner",
}


def __getattr__(name: str):
    if name not in _GENERATOR_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_GENERATOR_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value
