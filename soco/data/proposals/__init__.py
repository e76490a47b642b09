"""Selective-search proposals for SoCo: generation methods, SoCo's filter, file format, runner.

See ``proposals/README.md`` for the file format and ``tools/gen_proposals.py`` for the CLI.
"""
from .file_format import ProposalFile, load_proposals, read_proposal_file, save_proposals
from .filtering import FALLBACK_LEVELS, soco_filter
from .methods import DEFAULT_MAX_SIZE, DEFAULT_METHOD, METHODS
from .runner import generate, merge, propose_file

__all__ = ["ProposalFile", "load_proposals", "read_proposal_file", "save_proposals", "FALLBACK_LEVELS", "soco_filter", "DEFAULT_MAX_SIZE",
           "DEFAULT_METHOD", "METHODS", "generate", "merge", "propose_file"]
