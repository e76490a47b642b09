"""Installation sanity: Detectron2 builds Mask R-CNN R50-FPN and R18-FPN on CPU and trains one
step on the embedded detection set (boxes and polygon masks)."""
import math

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage

from soco import embedded

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def det_train(tmp_path_factory):
    """A 4-image embedded detection set registered as ``soco_demo_det_train``."""
    config = embedded.EmbeddedDataConfig(
        root=str(tmp_path_factory.mktemp("datasets")), num_photos=1, det_train_images=4, det_val_images=1
    )
    embedded.build_all(config, fashion_mnist=False)
    yield "soco_demo_det_train"
    embedded.register_all()



def _mask_rcnn_cfg(dataset: str, depth: int):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # basic blocks: res2 has 64 channels
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 10
    # Small and cheap: 128 px inputs, few proposals and RoIs.
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 160
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 256
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.001
    return cfg


@pytest.mark.parametrize("depth", [18, 50])
def test_mask_rcnn_fpn_trains_one_step_on_cpu(det_train, depth):
    cfg = _mask_rcnn_cfg(det_train, depth)
    model = build_model(cfg)
    assert model.backbone.bottom_up.output_shape()["res5"].channels == (512 if depth == 18 else 2048)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}

    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), build_optimizer(cfg, model))
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()
        losses = {k: v.latest() for k, v in storage.histories().items() if k.startswith("loss")}
        total = storage.history("total_loss").latest()

    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    assert math.isfinite(total) and total > 0
    changed = [k for k, v in model.named_parameters() if v.requires_grad and not torch.equal(v, before[k])]
    assert any(k.startswith("roi_heads.mask_head") for k in changed)
    assert any(k.startswith("backbone.bottom_up") for k in changed)
