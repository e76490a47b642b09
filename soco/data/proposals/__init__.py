"""Proposal files as training reads them: the memory-mapped store (``store``) and Detectron2's
precomputed-proposal pickle (``file_format``: reading either, writing, converting).

See ``proposals/README.md`` for the file format. The generator that makes the files is
``soco.proposals`` (``tools/gen_proposals.py``); reading a file imports none of it.
"""

from .file_format import ProposalFile, load_proposals, open_proposals, read_proposal_file, save_proposals
from .store import ProposalStore, StoreError

__all__ = ["ProposalFile", "ProposalStore", "StoreError", "load_proposals", "open_proposals", "read_proposal_file",
           "save_proposals"]
