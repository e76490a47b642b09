"""Small configs, batches and checks shared by the image-level method tests (not a test module)."""

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

from soco.config import get_pretrain_cfg
from soco.data.method_data import build_mapper
from soco.engine.pretrain import build_training_model
from soco.engine.step import training_step
from soco.modeling.meta_arch import clsa, coke, smog  # noqa: F401  (register the methods)


def tiny_cfg(arch: str, crop: int = 24, batch: int = 8, num_images: int = 32):
    """ResNet-18, 16-d heads, small crops: a CPU-sized config of ``arch``."""
    c = get_pretrain_cfg()
    c.MODEL.META_ARCHITECTURE = arch
    c.MODEL.DEVICE = "cpu"
    c.MODEL.RESNETS.DEPTH = 18
    c.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    c.MODEL.PROJECTOR.HIDDEN_DIM = 64
    c.MODEL.PROJECTOR.OUT_DIM = 16
    c.MODEL.PREDICTOR.HIDDEN_DIM = 64
    c.SOLVER.IMS_PER_BATCH = batch
    c.PRETRAIN.NUM_IMAGES = num_images  # as the engine's resolved config records it
    c.MODEL.COKE.NUM_CLUSTERS = [4, 6]
    c.MODEL.CLSA.QUEUE_SIZE = 64
    c.MODEL.CLSA.STRONG_CROP_SIZES = [crop // 2]
    c.MODEL.SMOG.NUM_GROUPS = 6
    c.MODEL.SMOG.RESET_PERIOD = 3
    for key in ("COKE", "CLSA", "SMOG"):
        c.MODEL[key].CROP_SIZE = crop
    c.MODEL.COKE.SMALL_CROP_SIZE = c.MODEL.SMOG.SMALL_CROP_SIZE = crop // 2
    return c


def build_method(cfg):
    """``cfg``'s method built as the engine builds it, for a dataset of PRETRAIN.NUM_IMAGES images."""
    return build_training_model(cfg, cfg.PRETRAIN.NUM_IMAGES)


def random_batch(cfg, num: int = 8, size: int = 32):
    """``num`` mapped random images (with instance indices) through the method's mapper views."""
    mapper = build_mapper(cfg)
    rng = np.random.RandomState(0)
    batch = []
    for i in range(num):
        image = torch.from_numpy((rng.rand(size, size, 3) * 255).astype(np.uint8)).permute(2, 0, 1)
        batch.append(mapper.map_image(image, str(i), i))
    return batch


def train_steps(model, batch, steps: int, start: int = 0, max_iter: int = 10, lr: float = 0.05):
    """Run ``steps`` SGD steps with the trainer's hook order; returns the last loss dict."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    for it in range(start, start + steps):
        losses, _ = training_step(model, lambda: batch, opt, it, max_iter)
    return losses


def assert_export_matches_detectron2(cfg, model):
    """Every online backbone key, renamed by export_spec, exists in a stock Detectron2 R-FPN."""
    stock_cfg = get_cfg()
    stock_cfg.MODEL.RESNETS.DEPTH = cfg.MODEL.RESNETS.DEPTH
    stock_cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    stock_cfg.MODEL.RESNETS.NORM = "BN"
    stock_cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    stock_cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # BN's step counter is not a weight (the stock model's frozen stages have none).
    def weights(keys):
        return {k for k in keys if not k.endswith("num_batches_tracked")}

    stock = weights("backbone." + k for k in build_resnet_fpn_backbone(stock_cfg, ShapeSpec(channels=3)).state_dict())
    stock_bottom_up = {k for k in stock if k.startswith("backbone.bottom_up.")}
    (online_prefix, stock_prefix), = type(model).export_spec(cfg)["backbone"]
    exported = weights(stock_prefix + k[len(online_prefix):] for k in model.state_dict() if k.startswith(online_prefix))
    assert exported == stock_bottom_up, sorted(exported ^ stock_bottom_up)[:10]


def assert_state_round_trip(model, make_model, tmp_path):
    """save -> load into a fresh model: every buffer and parameter equal."""
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    fresh = make_model()
    fresh.load_state_dict(torch.load(path)["model"])
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    return fresh


# Per-method settings of the in-memory learning check (ResNet-18, 32 px, batch 64, SGD): the
# papers' lr scaled to batch 64 (CLSA: MoCo v2's 0.03 x 64/256; larger rates first destroy the
# random features' kNN accuracy, and so does a cosine decay that is too short) and CoKe's
# balanced-set duals (supplementary 2.4: lower-bound ratio 0.9, small dual lr) with 100 / 200
# clusters (measured at 600 steps: 10 / 20 clusters 73.6 %, 100 / 200 75.1 %, random init 72.7 %;
# at lr 0.1 both fall below random init); SMoG likewise with 500 groups re-clustered every 100
# steps (50 groups: 73.4 %, 200: 74.3 %, 500: 75.2 %).
LEARNING_CHECK = {
    "CLSA": ["SOLVER.BASE_LR", 0.03],
    "CoKe": ["SOLVER.BASE_LR", 0.03, "MODEL.COKE.NUM_CLUSTERS", [100, 200], "MODEL.COKE.DUAL_LR", 0.1,
             "MODEL.COKE.LOWER_BOUND_RATIO", 0.9],
    "SMoG": ["SOLVER.BASE_LR", 0.03, "MODEL.SMOG.NUM_GROUPS", 500, "MODEL.SMOG.RESET_PERIOD", 100],
}
LEARNING_CHECK_STEPS = 600


def fashion_mnist_run(arch: str, steps: int, crop: int = 32, batch: int = 64, train: int = 5000, test: int = 1000,
                      warmup: int = 20, pretrain_images: int = None, unpaired_views: bool = False):
    """In-memory Fashion-MNIST pretraining of ``arch`` (ResNet-18) on the first
    ``pretrain_images`` (default all) of ``train`` training images: returns (kNN top-1 at random
    init, kNN top-1 after ``steps`` steps, run dict, model before training's stem weights).
    kNN: k = 20, bank = the ``train`` images, ``test`` test images. ``unpaired_views``: the
    broken-pairing control of ``pretrain_in_memory``."""
    pretrain_images = train if pretrain_images is None else pretrain_images
    from soco.engine.in_memory import pretrain_in_memory
    from soco.evaluation.quick_check import fashion_mnist_subset, knn_of

    cfg = tiny_cfg(arch, crop=crop, batch=batch, num_images=pretrain_images)
    cfg.MODEL.PROJECTOR.HIDDEN_DIM = cfg.MODEL.PREDICTOR.HIDDEN_DIM = 512
    cfg.MODEL.PROJECTOR.OUT_DIM = 64
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = "SGD", 0.4, 1e-4
    cfg.MODEL.COKE.NUM_CLUSTERS, cfg.MODEL.COKE.INIT_EPOCHS = [10, 20], 0
    cfg.MODEL.CLSA.QUEUE_SIZE = 1024
    cfg.MODEL.SMOG.NUM_GROUPS, cfg.MODEL.SMOG.RESET_PERIOD = 50, 50
    cfg.MODEL.EMA.MOMENTUM = 0.99
    for key in ("COKE", "SMOG"):
        cfg.MODEL[key].CROP_SCALE = (0.3, 1.0)
    cfg.merge_from_list(LEARNING_CHECK.get(arch, []))
    train_set, test_set = fashion_mnist_subset("train", train), fashion_mnist_subset("test", test)
    torch.manual_seed(0)
    model = build_method(cfg)
    stem = model.backbone.stem.conv1.weight.detach().clone()
    before = knn_of(model, train_set, test_set, crop, k=20)
    run = pretrain_in_memory(cfg, train_set[0][:pretrain_images], steps, model=model,
                             warmup_steps=min(warmup, steps // 2), unpaired_views=unpaired_views)
    after = knn_of(model, train_set, test_set, crop, k=20)
    return before, after, run, stem
