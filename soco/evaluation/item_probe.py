"""Item-crop probe of a detector's starting backbone: a cheap, low-noise measure of what a
pretraining start brings, beside the fine-tuned AP (whose seed-to-seed noise is 1-2 points at the
demo's budget).

The labelled boxes of a COCO-style detection set are cut out as square crops (the box's centre,
side = the box's longer side, pixels outside the image are zero), resized to ``crop_size`` and
encoded by the detector's ResNet exactly as a fine-tune would start from it (``MODEL.WEIGHTS``
loaded into the Detectron2 model of the fine-tuning config; random init = that model built
under ``seed``). Features: res5, globally average-pooled. Before encoding, the ResNet's
BatchNorm statistics are re-estimated on the bank crops (fvcore's ``update_bn_stats``: a
fine-tune also trains BN on the new data, and random init's running statistics are 0 / 1), so
every start is measured on equal terms. Then:

- weighted kNN (:mod:`.knn`): the training set's items are the bank, the validation set's items
  the queries; top-1 accuracy (%);
- linear probe (:mod:`.linear_probe`, L-BFGS logistic regression on standardised features):
  trained on the bank items, top-1 accuracy (%) on the query items.

``python -m soco.evaluation.item_probe --config-file C --weights W --output probe.json`` runs it
(``--weights ""``: random init under ``--seed``).
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from fvcore.nn.precise_bn import update_bn_stats
from torchvision.ops import roi_align

from ..config.finetune import use_plain_bn
from ..data.image_io import read_image_chw
from ..utils.files import atomic_write_json
from .knn import knn_accuracy
from .linear_probe import linear_probe_accuracy

__all__ = ["item_boxes", "item_crops", "detector_resnet", "res5_features", "item_probe", "main"]


def item_boxes(annotations: List[Dict]) -> Tuple[torch.Tensor, List[int]]:
    """Square crop boxes (K, 4) XYXY in pixels, centred on each annotation's box with side its
    longer side, and the annotations' ``category_id`` (contiguous, as Detectron2's COCO loader
    gives them). Annotations carry ``bbox`` in XYWH_ABS (COCO)."""
    boxes, labels = [], []
    for ann in annotations:
        x, y, w, h = ann["bbox"]
        half = max(w, h) / 2
        cx, cy = x + w / 2, y + h / 2
        boxes.append([cx - half, cy - half, cx + half, cy + half])
        labels.append(int(ann["category_id"]))
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), labels


def item_crops(dicts: List[Dict], crop_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every annotated item of ``dicts`` (Detectron2 dataset dicts with ``annotations``) as a
    uint8 RGB crop (N, 3, crop_size, crop_size), bilinearly resampled (torchvision's
    ``roi_align``, zeros outside the image), and its class (N,) int64."""
    crops, labels = [], []
    for d in dicts:
        boxes, classes = item_boxes(d.get("annotations", []))
        if not classes:
            continue
        image = read_image_chw(d["file_name"]).float()[None]
        out = roi_align(image, [boxes], output_size=crop_size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        crops.append(out.round().clamp(0, 255).to(torch.uint8))
        labels.extend(classes)
    if not crops:
        raise ValueError("item_crops: the dataset has no annotated items")
    return torch.cat(crops), torch.tensor(labels, dtype=torch.long)


def detector_resnet(cfg: CfgNode, weights: str, seed: int) -> Tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The ResNet of ``cfg``'s detector as fine-tuning starts from it: the model built under
    ``seed`` (random init), then ``weights`` loaded when not empty. Returns (resnet, pixel_mean
    (3, 1, 1), pixel_std (3, 1, 1)) in the channel order of ``cfg.INPUT.FORMAT``."""
    cfg = cfg.clone()
    cfg.defrost()
    use_plain_bn(cfg)  # one CPU process: SyncBN has no process group here
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(seed)
    model = build_model(cfg)
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"item probe: weights file {weights} does not exist")
        DetectionCheckpointer(model).load(weights)
    resnet = getattr(model.backbone, "bottom_up", model.backbone)
    return resnet, model.pixel_mean.cpu(), model.pixel_std.cpu()


def _normalise(crops: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor, bgr: bool) -> torch.Tensor:
    """uint8 RGB crops (N, 3, S, S) -> the detector's float input (channel order, mean, std)."""
    return ((crops.flip(1) if bgr else crops).float() - pixel_mean) / pixel_std


@torch.no_grad()
def res5_features(
    resnet: torch.nn.Module, crops: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
    bgr: bool = False, batch_size: int = 128,
) -> torch.Tensor:
    """uint8 RGB crops (N, 3, S, S) -> (N, C) globally average-pooled res5 features, the ResNet
    in eval mode (its current BN statistics)."""
    resnet.eval()
    feats = []
    for chunk in crops.split(batch_size):
        out = resnet(_normalise(chunk, pixel_mean, pixel_std, bgr))
        if "res5" not in out:
            raise ValueError(f"item probe: the backbone outputs {sorted(out)}, not res5 (needs an FPN-style ResNet)")
        feats.append(out["res5"].mean(dim=(2, 3)))
    return torch.cat(feats)


def item_probe(
    cfg: CfgNode, weights: str, seed: int, bank: Tuple[torch.Tensor, torch.Tensor],
    queries: Tuple[torch.Tensor, torch.Tensor], k: int = 20, temperature: float = 0.07,
    linear: bool = True, batch_size: int = 128,
) -> Dict[str, float]:
    """Probe the start ``weights`` ("" = random init under ``seed``) of ``cfg``'s detector.

    bank, queries: (crops uint8 (N, 3, S, S), labels (N,)) from :func:`item_crops`.
    Returns {"knn_top1", "linear_top1" (when ``linear``): accuracy in %, "bank_items",
    "query_items", "feature_dim", "k", "seconds"}.
    """
    start = time.perf_counter()
    resnet, mean, std = detector_resnet(cfg, weights, seed)
    bgr = cfg.INPUT.FORMAT == "BGR"
    inputs = [_normalise(c, mean, std, bgr) for c in bank[0].split(batch_size)]
    with torch.no_grad():
        update_bn_stats(resnet, inputs, num_iters=len(inputs))
    bank_feats = res5_features(resnet, bank[0], mean, std, bgr, batch_size)
    query_feats = res5_features(resnet, queries[0], mean, std, bgr, batch_size)
    result = {
        "knn_top1": 100.0 * knn_accuracy(bank_feats, bank[1], query_feats, queries[1], k, temperature),
        "bank_items": len(bank[1]), "query_items": len(queries[1]), "feature_dim": bank_feats.shape[1], "k": k,
    }
    if linear:
        result["linear_top1"] = 100.0 * linear_probe_accuracy(bank_feats, bank[1], query_feats, queries[1])
    result["seconds"] = time.perf_counter() - start
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Item-crop kNN and linear probe of a detector's starting ResNet.")
    parser.add_argument("--config-file", required=True, help="the fine-tuning config (Detectron2 keys)")
    parser.add_argument("--weights", default="", help='Detectron2 weight file ("": random init under --seed)')
    parser.add_argument("--seed", type=int, default=1, help="seed of the random initialisation (default 1)")
    parser.add_argument("--bank", default="soco_demo_det_train", help="registered dataset whose items are the bank")
    parser.add_argument("--queries", default="soco_demo_det_val", help="registered dataset whose items are queried")
    parser.add_argument("--crop-size", type=int, default=64, help="crop side in pixels (default 64)")
    parser.add_argument("--k", type=int, default=20, help="kNN neighbours (default 20)")
    parser.add_argument("--no-linear", action="store_true", help="kNN only")
    parser.add_argument("--output", required=True, help="JSON file to write")
    args = parser.parse_args(argv)

    import soco.embedded  # noqa: F401  (registers the embedded detection sets)

    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    for name in (args.bank, args.queries):
        if name not in DatasetCatalog.list():
            parser.error(f"{name!r} is not a registered dataset")
    bank = item_crops(DatasetCatalog.get(args.bank), args.crop_size)
    queries = item_crops(DatasetCatalog.get(args.queries), args.crop_size)
    result = item_probe(cfg, args.weights, args.seed, bank, queries, k=args.k, linear=not args.no_linear)
    result.update(weights=args.weights, seed=args.seed, bank=args.bank, queries=args.queries, crop_size=args.crop_size)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_write_json(args.output, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
