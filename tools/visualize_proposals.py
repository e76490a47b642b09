#!/usr/bin/env python
"""Draw the kept proposals of a few images into one PNG grid.

    python tools/visualize_proposals.py --image-root DIR --proposals proposals/NAME.pkl \
        --output grid.png [--num-images 8] [--max-boxes 12] [--columns 4] [--tile-size 256] [--seed 0]

Images are read with ``read_image_rgb`` (EXIF-upright, like training), so boxes line up with what
the model sees. Each tile shows at most ``--max-boxes`` boxes (a deterministic random sample, like
SoCo's sampling of K = 4 per step) and the image's number of proposals.
"""
import argparse
import os
import sys

import cv2
import numpy as np

from soco.data.image_io import read_image_rgb
from soco.utils.errors import add_debug_argument, run_tool
from soco.data.proposals import load_proposals


def draw_tile(image: np.ndarray, boxes: np.ndarray, tile_size: int, rng: np.random.RandomState, max_boxes: int,
              caption: str) -> np.ndarray:
    """Image with ``boxes`` (XYXY, its pixels) drawn, letterboxed into a tile_size x tile_size RGB tile."""
    scale = tile_size / max(image.shape[:2])
    resized = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    tile = np.full((tile_size, tile_size, 3), 255, np.uint8)
    tile[:resized.shape[0], :resized.shape[1]] = resized
    chosen = boxes if len(boxes) <= max_boxes else boxes[np.sort(rng.choice(len(boxes), max_boxes, replace=False))]
    colours = cv2.applyColorMap(np.linspace(0, 212, max(1, len(chosen))).astype(np.uint8),  # stop before hue wraps to red
                                cv2.COLORMAP_HSV)[:, 0, ::-1]
    for box, colour in zip(chosen, colours):
        x1, y1, x2, y2 = (np.asarray(box) * scale).round().astype(int).tolist()
        cv2.rectangle(tile, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), tuple(int(c) for c in colour), 2)
    for colour, thickness in (((255, 255, 255), 3), ((0, 0, 0), 1)):  # outlined: readable on any photo
        cv2.putText(tile, caption, (4, tile_size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, thickness, cv2.LINE_AA)
    return tile


def make_grid(image_root: str, proposals_path: str, num_images: int = 8, max_boxes: int = 12, columns: int = 4,
              tile_size: int = 256, seed: int = 0) -> np.ndarray:
    """RGB uint8 grid of ``num_images`` evenly spaced images of the proposal file, boxes drawn."""
    proposals = load_proposals(proposals_path)
    ids = list(proposals)
    if not ids:
        raise ValueError(f"{proposals_path} holds no images")
    picks = [ids[i] for i in np.linspace(0, len(ids) - 1, min(num_images, len(ids))).round().astype(int)]
    rng = np.random.RandomState(seed)
    tiles = []
    for image_id in picks:
        image = read_image_rgb(os.path.join(image_root, *image_id.split("/")))
        boxes = proposals[image_id]
        tiles.append(draw_tile(image, boxes, tile_size, rng, max_boxes, f"{len(boxes)} boxes"))
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[r:r + columns], axis=1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--proposals", required=True, help="file written by tools/gen_proposals.py")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--max-boxes", type=int, default=12, help="boxes drawn per image (random sample)")
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = add_debug_argument(parser).parse_args(argv)
    return run_tool(_run, args, debug=args.debug)


def _run(args) -> int:
    grid = make_grid(args.image_root, args.proposals, args.num_images, args.max_boxes, args.columns,
                     args.tile_size, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if not cv2.imwrite(args.output, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {args.output}")
    print(f"wrote {args.output} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
