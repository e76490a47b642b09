"""Keys of CoKe (Qian et al., CVPR 2022, "online constrained k-means"), with the paper's defaults.

Where the supplementary leaves a value open, the default is the official code's
(github.com/idstcv/CoKe, ``run_double_view.sh``): three clustering heads with K = 3000/4000/5000,
dual lr 20, lower-bound ratio 0.4, temperature 0.05 for two views, and a first epoch at lr 0
that only initialises the clusters.
"""

from detectron2.config import CfgNode as CN


def add_coke_config(cfg: CN) -> None:
    cfg.MODEL.COKE = CN()
    # One clustering head per K; the loss averages over heads (official: 3000 4000 5000).
    cfg.MODEL.COKE.NUM_CLUSTERS = [3000, 4000, 5000]
    # lambda of the classification logits x^T c / lambda: 0.05 for two or more views
    # (supplementary 2.1), 0.1 for the single-view variant.
    cfg.MODEL.COKE.TEMPERATURE = 0.05
    # Dual variables: rho_k <- max(0, rho_k - DUAL_LR * (n_k / B - LOWER_BOUND_RATIO / K)).
    cfg.MODEL.COKE.DUAL_LR = 20.0
    # Lower bound of every cluster's size as a fraction of N / K (gamma_k = ratio * N / K).
    cfg.MODEL.COKE.LOWER_BOUND_RATIO = 0.4
    # Two-view soft label y_hat = ALPHA * last epoch's one-hot + (1 - ALPHA) * other view's p.
    cfg.MODEL.COKE.ALPHA = 0.2
    # loss = BETA * l_pred + (1 - BETA) * l_proj (supplementary 2.2.4; 0.5 is best for two
    # views, and what the official code computes). BETA = 0 needs no predictor.
    cfg.MODEL.COKE.BETA = 0.5
    # Epochs at the start trained at lr 0 (the trainer's schedule is 0 there): they only assign
    # labels and build the centres (official: epoch 0 at lr 0).
    cfg.MODEL.COKE.INIT_EPOCHS = 1
    # Single-view second stage (supplementary 2.2.2): from this epoch on (counting the
    # initialisation epoch) labels and centres are moving averages over epochs; the label keeps
    # its SECOND_STAGE_LABELS largest entries, smoothed by softmax(. / SECOND_STAGE_TEMPERATURE).
    # -1: one stage (the two-view default). Paper: first stage = 160/200 of the epochs.
    cfg.MODEL.COKE.SECOND_STAGE_EPOCH = -1
    cfg.MODEL.COKE.SECOND_STAGE_LABELS = 5
    cfg.MODEL.COKE.SECOND_STAGE_TEMPERATURE = 0.5
    # Batch norm after the projector's last linear layer (official 3-layer projector has it).
    cfg.MODEL.COKE.PROJECTOR_OUTPUT_BN = True
    # Views: NUM_VIEWS crops of CROP_SIZE px (BYOL's asymmetric augmentations, as the official
    # two-view code), plus NUM_SMALL_CROPS of SMALL_CROP_SIZE px (multi-crop variant).
    # NUM_VIEWS = 1 gives the single-view variant (cross-entropy against last epoch's labels).
    cfg.MODEL.COKE.NUM_VIEWS = 2
    cfg.MODEL.COKE.CROP_SIZE = 224
    cfg.MODEL.COKE.CROP_SCALE = (0.08, 1.0)
    cfg.MODEL.COKE.NUM_SMALL_CROPS = 0
    cfg.MODEL.COKE.SMALL_CROP_SIZE = 96
    cfg.MODEL.COKE.SMALL_CROP_SCALE = (0.05, 0.14)
