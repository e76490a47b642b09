"""Keys of SMoG (Pang et al., ECCV 2022, "Synchronous Momentum Grouping"), paper defaults.

The momentum network (alpha = 0.999) is set through MODEL.EMA (MOMENTUM = MOMENTUM_END), the
2-layer heads (hidden 2048, output 128) through MODEL.PROJECTOR / MODEL.PREDICTOR.
"""

from detectron2.config import CfgNode as CN


def add_smog_config(cfg: CN) -> None:
    cfg.MODEL.SMOG = CN()
    cfg.MODEL.SMOG.NUM_GROUPS = 3000
    cfg.MODEL.SMOG.TEMPERATURE = 0.1
    # beta of the momentum grouping, linear from BETA_START at iteration 0 to BETA_END at the end.
    cfg.MODEL.SMOG.BETA_START = 1.0
    cfg.MODEL.SMOG.BETA_END = 0.99
    # Every RESET_PERIOD iterations: k-means over the online features cached during the last
    # RESET_PERIOD iterations re-initialises the groups, and the momentum network is reset to
    # the online one. The cache holds RESET_PERIOD * SOLVER.IMS_PER_BATCH features.
    cfg.MODEL.SMOG.RESET_PERIOD = 300
    cfg.MODEL.SMOG.KMEANS_ITERS = 10
    # The re-grouping k-means scores the cached features against the groups in chunks of rows
    # whose similarity block stays under this many MiB (the full M x L matrix at the paper's
    # 800-epoch cache, 1,228,800 x 3000 floats, is 14.7 GB); the result does not depend on it.
    cfg.MODEL.SMOG.KMEANS_CHUNK_MB = 1024
    # "online" (default): the predictor on the online branch, BYOL-style (lightly's
    # implementation). "momentum": the literal reading of the paper's text ("f_eta has an extra
    # prediction head stacked on the projection head"); there the predictor gets no gradient and
    # no EMA, so it stays a random MLP that maps the momentum features away from the space the
    # groups live in, and the targets c^b are near random: on Fashion-MNIST it did not learn
    # (see soco/modeling/meta_arch/smog.py). Kept for comparison.
    cfg.MODEL.SMOG.PREDICTOR_BRANCH = "online"
    # Batch norm after the projector's output layer ("the output layer of projection head also
    # has BN").
    cfg.MODEL.SMOG.PROJECTOR_OUTPUT_BN = True
    # Two views of CROP_SIZE (BYOL's asymmetric augmentations, given to the two streams in
    # alternation) plus NUM_SMALL_CROPS of SMALL_CROP_SIZE (multi-crop: 2 x 224 (0.2, 1) and
    # 4 x 96 (0.05, 0.2) in the paper).
    cfg.MODEL.SMOG.CROP_SIZE = 224
    cfg.MODEL.SMOG.CROP_SCALE = (0.08, 1.0)
    cfg.MODEL.SMOG.NUM_SMALL_CROPS = 0
    cfg.MODEL.SMOG.SMALL_CROP_SIZE = 96
    cfg.MODEL.SMOG.SMALL_CROP_SCALE = (0.05, 0.2)
