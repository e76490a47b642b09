#!/usr/bin/env python
"""Convert proposals between Detectron2's pickle and soco's memory-mapped store.

    python tools/convert_proposals.py proposals/NAME.pkl proposals/NAME.store   # pickle -> store
    python tools/convert_proposals.py proposals/NAME.store proposals/NAME.pkl   # store -> pickle

The output's format follows its name: ``.pkl`` writes the pickle (what
``detectron2.data.load_proposals_into_dataset`` reads), anything else the store. Converting to
the store rounds boxes to whole pixels, clips them to the image and drops empty ones; ids,
sizes and recorded failures are kept. Writes are atomic. See proposals/README.md.
"""
import argparse
import sys

from soco.data.proposals.file_format import is_pickle_path, pickle_to_store, store_to_pickle
from soco.data.proposals.store import ProposalStore, StoreError, is_store


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="a proposal store or a proposal pickle (.pkl)")
    parser.add_argument("output", help="the file to write: NAME.pkl for the pickle, any other name for the store")
    args = parser.parse_args(argv)
    try:
        if is_store(args.input):
            if not is_pickle_path(args.output):
                parser.error(f"{args.input} is already a store; name the output NAME.pkl to get the pickle")
            store_to_pickle(args.input, args.output)
        else:
            if is_pickle_path(args.output):
                parser.error(f"{args.input} is not a store; name the output without .pkl to get the store")
            pickle_to_store(args.input, args.output)
    except (StoreError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not is_pickle_path(args.output):
        store = ProposalStore(args.output)
        print(f"{args.output}: {len(store)} images, {int(store.offsets[-1])} boxes, {len(store.failed)} failures")
    else:
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
