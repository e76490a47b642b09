#!/usr/bin/env python
"""Evaluate a pretrained backbone on a labelled image set: weighted kNN (k=200, T=0.07), a
linear probe on frozen features, and, for CoKe checkpoints, each clustering head's ACC/NMI/ARI.

    python tools/eval_representation.py --config-file configs/CoKe/demo_fashion_mnist.yaml \
        --weights output/coke_demo/model_final.pth --dataset fashion_mnist_train

``--dataset``: a registered dataset with labels (``fashion_mnist_train``) or an ImageFolder
directory (``root/<class>/<image>``); the test split defaults to ``X_test`` or the ``val/`` /
``test/`` sibling of a ``train/`` folder. Without ``--weights`` the network is randomly
initialised (the baseline). Prints a table; ``--output`` also writes it as JSON.
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY, build_model

from soco.config import get_pretrain_cfg
from soco.evaluation import clustering_metrics, knn_accuracy, linear_probe_accuracy
from soco.evaluation.features import default_test_split, extract_features, labelled_dicts, subsample
from soco.modeling import meta_arch  # noqa: F401  (registers the methods)
from soco.modeling.meta_arch.base import build_pretrain_resnet
from soco.utils.files import atomic_write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="pretraining checkpoint (.pth); empty: random init")
    p.add_argument("--dataset", required=True, help="train split: registered name or ImageFolder path")
    p.add_argument("--test-dataset", default="", help="test split (default: inferred from --dataset)")
    p.add_argument("--image-size", type=int, default=0, help="eval resolution (default: the method's CROP_SIZE)")
    p.add_argument("--max-train", type=int, default=0, help="evenly subsample the train split (0: all)")
    p.add_argument("--max-test", type=int, default=0, help="evenly subsample the test split (0: all)")
    p.add_argument("--knn-k", type=int, default=200)
    p.add_argument("--knn-t", type=float, default=0.07)
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default="", help="write the results as JSON here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE overrides")
    return p.parse_args(argv)


def load_cfg(args):
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = args.device
    return cfg


def method_crop_size(cfg) -> int:
    name = cfg.MODEL.META_ARCHITECTURE.upper()
    section = cfg.MODEL.get(name, None)
    return int(section.CROP_SIZE) if section is not None and "CROP_SIZE" in section else 224


def load_state(path: str) -> dict:
    if not path:
        return {}
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--weights {path}: no such file")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt.get("model", ckpt)


def build_encoder(cfg, state: dict, device: str):
    """The method's online backbone with the checkpoint's weights: uint8 images -> pooled res5."""
    method = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    prefix = method.export_spec(cfg)["backbone"][0][0]
    backbone = build_pretrain_resnet(cfg, ("res5",))
    if state:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        missing, unexpected = backbone.load_state_dict(sub, strict=False)
        if missing:
            raise KeyError(f"checkpoint lacks backbone weights under '{prefix}': {missing[:5]} ...")
    backbone.to(device).eval()
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, device=device).view(1, -1, 1, 1)

    def encode(images: torch.Tensor) -> torch.Tensor:
        x = (images.to(device).float() - mean) / std
        return backbone(x)["res5"].mean(dim=(2, 3))

    return encode


def coke_cluster_metrics(cfg, state: dict, dicts, image_size: int, batch_size: int, device: str) -> dict:
    """ACC/NMI/ARI of each CoKe head: nearest centre of the normalised projection."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.PRETRAIN.NUM_IMAGES = int(state["labels"].shape[1])
    model = build_model(cfg)
    model.load_state_dict(state)
    model.eval()
    heads = {h: [] for h in range(len(model.num_clusters))}

    def encode(images):
        z = F.normalize(model.project(model.preprocess_images([{"v": [im]} for im in images], "v")[0]), dim=1)
        for h in heads:
            heads[h].append((z @ getattr(model, f"loss_centers_{h}").t()).argmax(dim=1).cpu())
        return z

    _, labels = extract_features(encode, dicts, image_size, batch_size)
    return {
        f"head{h} (K={model.num_clusters[h]})": clustering_metrics(labels.numpy(), torch.cat(p).numpy())
        for h, p in heads.items()
    }


def evaluate(args) -> dict:
    cfg = load_cfg(args)
    image_size = args.image_size or method_crop_size(cfg)
    train = subsample(labelled_dicts(args.dataset), args.max_train)
    test = subsample(labelled_dicts(args.test_dataset or default_test_split(args.dataset)), args.max_test)
    state = load_state(args.weights)
    encode = build_encoder(cfg, state, args.device)
    train_x, train_y = extract_features(encode, train, image_size, args.batch_size)
    test_x, test_y = extract_features(encode, test, image_size, args.batch_size)
    results = {
        "method": cfg.MODEL.META_ARCHITECTURE,
        "weights": args.weights or "random init",
        "train/test images": f"{len(train)}/{len(test)}",
        f"knn top1 (k={args.knn_k}, T={args.knn_t})": knn_accuracy(train_x, train_y, test_x, test_y, args.knn_k, args.knn_t),
    }
    if not args.no_linear:
        results["linear probe top1"] = linear_probe_accuracy(train_x, train_y, test_x, test_y)
    if cfg.MODEL.META_ARCHITECTURE == "CoKe" and state:
        with torch.no_grad():
            for head, metrics in coke_cluster_metrics(cfg, state, test, image_size, args.batch_size, args.device).items():
                for name, value in metrics.items():
                    results[f"{head} {name}"] = value
    return results


def print_table(results: dict) -> None:
    width = max(len(k) for k in results)
    for key, value in results.items():
        shown = f"{100 * value:.2f}%" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_flush_denormal(True)
    results = evaluate(args)
    print_table(results)
    if args.output:
        atomic_write_json(args.output, results, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
