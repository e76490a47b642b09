"""Keys of the SoCo method (Wei et al. 2021, sections 3 and 4.1), with the paper's defaults.

Sizes are in pixels of the view they name; boxes are XYXY absolute pixels.
The RoI pooling of the FPN variant reads ``MODEL.ROI_BOX_HEAD.POOLER_*`` (paper: 7x7 RoIAlign),
the C4 variant reads ``MODEL.ROI_HEADS`` / ``MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION`` (14x14 then
res5), as a stock Detectron2 detector does, so the pretrained head sees what it sees at fine-tuning.
"""

from detectron2.config import CfgNode as CN

from ..utils.errors import ConfigError

__all__ = ["SOCO_FPN_LEVELS", "add_soco_config", "check_soco_config"]

# The FPN levels SoCo pools from, finest first; MODEL.SOCO.LEVEL_THRESHOLDS splits box sizes
# between them (P6 is built, as in the detector, but unused).
SOCO_FPN_LEVELS = ("p2", "p3", "p4", "p5")


def add_soco_config(cfg: CN) -> None:
    cfg.MODEL.SOCO = CN()
    # "FPN": ResNet + FPN (P2-P5) + 4conv1fc box head. "C4": RoIAlign on res4 + res5 head, no V3.
    cfg.MODEL.SOCO.VARIANT = "FPN"
    # Proposal file from tools/gen_proposals.py (Detectron2 precomputed-proposal pickle whose ids
    # are image paths relative to the image root). Every training image must be in it.
    cfg.MODEL.SOCO.PROPOSALS = ""
    # Refuse the proposal file when more than this fraction of the training images have no usable
    # box after validation (soco.data.proposals.validation: broken boxes dropped, the rest clipped):
    # such images train on the whole crop, image-level, so a broken file would silently turn SoCo
    # into BYOL. Every repair and drop is counted in the log either way.
    cfg.MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES = 0.02
    # K proposals per image and training step (sampled with replacement when fewer are valid).
    cfg.MODEL.SOCO.NUM_PROPOSALS = 4

    # Views. V1 = whole image resized to VIEW1_SIZE^2; V2 = random crop of V1 (scale CROP_SCALE
    # of V1's area, aspect ratio in CROP_RATIO as torchvision's RandomResizedCrop) resized to
    # VIEW2_SIZE^2; V3 = V2 downsampled to VIEW3_SIZE^2; SoCo*: V4 = another crop of V1 resized
    # to VIEW4_SIZE^2.
    cfg.MODEL.SOCO.VIEW1_SIZE = 224
    cfg.MODEL.SOCO.VIEW2_SIZE = 224
    cfg.MODEL.SOCO.USE_VIEW3 = True
    cfg.MODEL.SOCO.VIEW3_SIZE = 112
    cfg.MODEL.SOCO.USE_VIEW4 = False
    cfg.MODEL.SOCO.VIEW4_SIZE = 192
    cfg.MODEL.SOCO.CROP_SCALE = (0.5, 1.0)
    cfg.MODEL.SOCO.CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
    # "Proposals outside of V2 are dropped" (paper, unspecified): a proposal stays when at least
    # this fraction of its area lies inside the crop; it is then clipped to the crop in every view.
    cfg.MODEL.SOCO.MIN_VISIBLE_FRACTION = 0.5
    # Crops are redrawn up to this many times until one keeps a proposal; after that the visible
    # part of the whole image (the crop itself) is the proposal.
    cfg.MODEL.SOCO.MAX_CROP_ATTEMPTS = 10

    # Box jitter (paper 3.2): with probability JITTER_PROB per proposal and view, the centre and
    # size move by r * (w, h) with r ~ U[-JITTER_RATIO, JITTER_RATIO]; the paper draws one r per
    # box, JITTER_PER_COORDINATE draws one per coordinate (closer to the official code).
    cfg.MODEL.SOCO.JITTER_PROB = 0.5
    cfg.MODEL.SOCO.JITTER_RATIO = 0.1
    cfg.MODEL.SOCO.JITTER_PER_COORDINATE = False

    # Scale-aware assignment: sqrt(box area) in the view's pixels <= T[0] -> P2, <= T[1] -> P3,
    # <= T[2] -> P4, else P5 (official code's reading of the paper's 0-48^2 / 49^2-96^2 / ... ranges).
    cfg.MODEL.SOCO.LEVEL_THRESHOLDS = (48, 96, 192)

    # FPN top-down upsampling. "lateral_size": interpolate each coarser level to the size of the
    # lateral it is added to (soco.modeling.fpn.LateralSizeFPN, as the official code's
    # mmdetection FPN), so V3 runs at 112 px unpadded. "scale2": Detectron2's FPN (upsampling by
    # exactly 2), views zero-padded (mean pixel) to multiples of 32; padding enters BN statistics.
    # Both have the same modules and tensors, so conversion and fine-tuning do not change.
    cfg.MODEL.SOCO.FPN_UPSAMPLE = "lateral_size"

    # How views and their boxes are made. "paper" (default): V3 = V2 downsampled; a proposal
    # stays when MIN_VISIBLE_FRACTION of it is inside the crop and is clipped to it in every view
    # (paired boxes cover the same pixels); every view's boxes are jittered (JITTER_*).
    # "official" (hologerry/SoCo's data pipeline): V2 and V4 are crops of the original image;
    # without V4, V3 is an independent VIEW3_SIZE crop with its own K proposals (with V4, as the
    # official SoCo* script, V3 is V2 resized); a proposal stays when it overlaps the crop at all;
    # V1's boxes are the whole (jittered) proposals and the other view's boxes the part inside its
    # crop; only V1's boxes are jittered, the top-left corner and size moving by r * (w, h) with
    # one r per coordinate (JITTER_PER_COORDINATE is implied); fewer than K proposals are padded
    # with jittered copies.
    cfg.MODEL.SOCO.VIEWS = "paper"
    # Box-aware cutout (official FPN 100-epoch and C4 scripts; not in the paper): in every view
    # but V1, per box with probability CUTOUT_PROB, a square of CUTOUT_SCALE = (lo, hi) x the
    # box's area (uniform) centred at a uniform point of the box is set to the mean pixel (0
    # after normalisation, as the official code zeroes normalised tensors). 0: off.
    cfg.MODEL.SOCO.CUTOUT_PROB = 0.0
    cfg.MODEL.SOCO.CUTOUT_SCALE = (0.1, 0.3)


def check_soco_config(cfg: CN) -> None:
    """Raise ConfigError naming the key when the SoCo settings contradict each other (run by
    ``soco.config.validation.check_config`` when a SoCo config is loaded)."""
    c = cfg.MODEL.SOCO
    if c.VARIANT not in ("FPN", "C4"):
        raise ConfigError(f"MODEL.SOCO.VARIANT must be 'FPN' or 'C4', got {c.VARIANT!r}")
    if c.VARIANT == "C4" and c.USE_VIEW3:
        raise ConfigError("MODEL.SOCO.VARIANT C4 discards V3 (paper, section 3.3): set MODEL.SOCO.USE_VIEW3 False")
    if c.FPN_UPSAMPLE not in ("lateral_size", "scale2"):
        raise ConfigError(f"MODEL.SOCO.FPN_UPSAMPLE must be 'lateral_size' or 'scale2', got {c.FPN_UPSAMPLE!r}")
    if c.VIEWS not in ("paper", "official"):
        raise ConfigError(f"MODEL.SOCO.VIEWS must be 'paper' or 'official', got {c.VIEWS!r}")
    thresholds = list(c.LEVEL_THRESHOLDS)
    if len(thresholds) != len(SOCO_FPN_LEVELS) - 1 or thresholds != sorted(thresholds):
        raise ConfigError(f"MODEL.SOCO.LEVEL_THRESHOLDS must be 3 increasing sizes (P2|P3|P4|P5), got {thresholds}")
    if c.VARIANT == "FPN":
        if list(cfg.MODEL.FPN.IN_FEATURES) != ["res2", "res3", "res4", "res5"]:
            raise ConfigError(
                f"MODEL.FPN.IN_FEATURES must be res2..res5 to give P2-P5, got {cfg.MODEL.FPN.IN_FEATURES}"
            )
        if cfg.MODEL.ROI_BOX_HEAD.NAME != "FastRCNNConvFCHead":
            raise ConfigError(f"MODEL.ROI_BOX_HEAD.NAME must be FastRCNNConvFCHead, got {cfg.MODEL.ROI_BOX_HEAD.NAME!r}")
