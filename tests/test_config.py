"""Config: every pretraining key has a default; wrong keys and wrong types name the key."""

import os

import pytest

from soco.config import add_pretrain_config, get_pretrain_cfg, load_pretrain_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


# The papers' stated settings: (shipped config, key, the paper's value, where the paper says it).
PAPER_SETTINGS = [
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.SOCO.NUM_PROPOSALS", 4, "SoCo 4.3: proposal number K = 4"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.SOCO.VIEW1_SIZE", 224, "SoCo 3.2: resized to 224x224 to obtain V1"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.SOCO.VIEW2_SIZE", 224, "SoCo 3.2: V2 resized to the size of V1"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.SOCO.VIEW3_SIZE", 112, "SoCo 3.2, table 5a: V3 112x112"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.SOCO.CROP_SCALE", (0.5, 1.0), "SoCo 3.2: crop scale [0.5, 1.0]"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.SOCO.JITTER_PROB", 0.5, "SoCo 3.2: jitter with probability 0.5"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.SOCO.JITTER_RATIO", 0.1, "SoCo 3.2: r in [-0.1, 0.1]"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.SOCO.LEVEL_THRESHOLDS", (48, 96, 192), "SoCo 3.3: 48^2 / 96^2 / 192^2"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.PROJECTOR.HIDDEN_DIM", 4096, "SoCo 4.1: linear 4096, BN, ReLU"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.PROJECTOR.OUT_DIM", 256, "SoCo 4.1: output dimension 256"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.PREDICTOR.HIDDEN_DIM", 4096, "SoCo 4.1: both MLPs alike"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.EMA.MOMENTUM", 0.99, "SoCo 4.1: tau starts from 0.99"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "MODEL.EMA.MOMENTUM_END", 1.0, "SoCo 4.1: increased to 1"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "PRETRAIN.EPOCHS", 100, "SoCo 4.1: 100-epoch schedule"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "PRETRAIN.WARMUP_EPOCHS", 10, "SoCo 4.1: warm-up of 10 epochs"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "SOLVER.OPTIMIZER", "LARS", "SoCo 4.1: LARS"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "SOLVER.BASE_LR", 1.0, "SoCo 4.1: lr_base 1.0"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "PRETRAIN.LR_REFERENCE_BATCH", 256, "SoCo 4.1: x BatchSize / 256"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "SOLVER.WEIGHT_DECAY", 1e-5, "SoCo 4.1: weight decay 1e-5"),
    ("SoCo/SoCo_R50_FPN_100ep.yaml", "SOLVER.IMS_PER_BATCH", 2048, "SoCo 4.1: total batch 2048"),
    ("CLSA/clsa_R50_200ep.yaml", "MODEL.CLSA.TEMPERATURE", 0.2, "CLSA 4.1: tau 0.2"),
    ("CLSA/clsa_R50_200ep.yaml", "MODEL.CLSA.BETA", 1.0, "CLSA 4.1: beta 1.0"),
    ("CLSA/clsa_R50_200ep.yaml", "MODEL.CLSA.QUEUE_SIZE", 65536, "CLSA 4.1: queue K 65536"),
    ("CLSA/clsa_R50_200ep.yaml", "MODEL.EMA.MOMENTUM", 0.999, "CLSA 4.1: alpha 0.999 (MoCo)"),
    ("CLSA/clsa_R50_200ep.yaml", "SOLVER.BASE_LR", 0.03, "CLSA 4.1: base_lr 0.03"),
    ("CLSA/clsa_R50_200ep.yaml", "SOLVER.WEIGHT_DECAY", 1e-4, "CLSA 4.1: weight decay 0.0001"),
    ("CLSA/clsa_R50_200ep.yaml", "SOLVER.MOMENTUM", 0.9, "CLSA 4.1: momentum 0.9"),
    ("CLSA/clsa_R50_200ep.yaml", "SOLVER.IMS_PER_BATCH", 256, "CLSA 4.1: batch 256"),
    ("CLSA/clsa_R50_200ep.yaml", "MODEL.CLSA.SHUFFLE_BN", True, "CLSA 4.1: shuffle BN"),
    ("SMoG/smog_R50_400ep.yaml", "MODEL.SMOG.NUM_GROUPS", 3000, "SMoG 4.1: 3k groups"),
    ("SMoG/smog_R50_400ep.yaml", "MODEL.SMOG.TEMPERATURE", 0.1, "SMoG 4.1: temperature 0.1"),
    ("SMoG/smog_R50_400ep.yaml", "MODEL.EMA.MOMENTUM", 0.999, "SMoG 4.1: Siamese momentum 0.999"),
    ("SMoG/smog_R50_400ep.yaml", "MODEL.PROJECTOR.HIDDEN_DIM", 2048, "SMoG 4.1: hidden 2048"),
    ("SMoG/smog_R50_400ep.yaml", "MODEL.PROJECTOR.OUT_DIM", 128, "SMoG 4.1: output 128 for CNN"),
    ("SMoG/smog_R50_400ep.yaml", "SOLVER.OPTIMIZER", "LARS", "SMoG 4.1: LARS"),
    ("SMoG/smog_R50_400ep.yaml", "SOLVER.BASE_LR", 0.3, "SMoG 4.1: lr 0.3 x batch / 256"),
    ("SMoG/smog_R50_400ep.yaml", "SOLVER.WEIGHT_DECAY", 1e-6, "SMoG 4.1: weight decay 1e-6"),
    ("SMoG/smog_R50_400ep.yaml", "PRETRAIN.WARMUP_EPOCHS", 10, "SMoG 4.1: 10-epoch warm-up"),
    ("CoKe/coke_R50_800ep.yaml", "MODEL.COKE.TEMPERATURE", 0.05, "CoKe 4: two/multi-view temperature 0.05"),
    ("CoKe/coke_R50_200ep_single_view.yaml", "MODEL.COKE.SECOND_STAGE_TEMPERATURE", 0.5,
     "CoKe supplementary 2.2.2: lambda' = 0.5"),
]


@pytest.mark.parametrize("config, key, value, source", PAPER_SETTINGS, ids=[f"{c}:{k}" for c, k, _, _ in PAPER_SETTINGS])
def test_shipped_configs_follow_the_papers(config, key, value, source):
    """Each method's shipped paper config holds the setting its paper states."""
    node = load_pretrain_config(os.path.join(CONFIGS, config))
    for part in key.split("."):
        node = node[part]
    shipped = tuple(node) if isinstance(node, (list, tuple)) else node
    assert shipped == pytest.approx(value) if isinstance(value, float) else shipped == value, (key, source)


def test_method_defaults_are_the_papers():
    """Each method's own keys default to its paper's setting (a config need not repeat them)."""
    cfg = get_pretrain_cfg()
    for _, key, value, source in PAPER_SETTINGS:
        if key.split(".")[1] in ("SOCO", "CLSA", "SMOG", "COKE"):
            node = cfg
            for part in key.split("."):
                node = node[part]
            shipped = tuple(node) if isinstance(node, (list, tuple)) else node
            assert shipped == pytest.approx(value) if isinstance(value, float) else shipped == value, (key, source)


def test_add_pretrain_config_is_idempotent():
    cfg = get_pretrain_cfg()
    cfg.PRETRAIN.EPOCHS = 7
    add_pretrain_config(cfg)
    assert cfg.PRETRAIN.EPOCHS == 7


def test_unknown_key_on_command_line_is_named():
    with pytest.raises(KeyError, match="command line.*PRETRAIN.EPOCS"):
        load_pretrain_config(opts=["PRETRAIN.EPOCS", "3"])


def test_wrong_type_on_command_line_is_named():
    with pytest.raises(ValueError, match="PRETRAIN.EPOCHS"):
        load_pretrain_config(opts=["PRETRAIN.EPOCHS", "many"])


def test_odd_override_list_is_an_error():
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        load_pretrain_config(opts=["PRETRAIN.EPOCHS"])


def test_unknown_key_in_yaml_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("PRETRAIN:\n  WARMUP_EPOCS: 3\n")
    with pytest.raises(KeyError, match="bad.yaml.*PRETRAIN.WARMUP_EPOCS"):
        load_pretrain_config(str(bad))


def test_wrong_type_in_yaml_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  LARS:\n    TRUST_COEF: [1, 2]\n")
    with pytest.raises(ValueError, match="bad.yaml.*SOLVER.LARS.TRUST_COEF"):
        load_pretrain_config(str(bad))


def test_every_shipped_pretraining_config_loads():
    """All YAML under configs/ (except Detectron2 fine-tune configs) merge without errors."""
    from pathlib import Path

    configs = sorted(p for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml") if "finetune" not in p.parts)
    assert configs, "no pretraining configs shipped"
    for path in configs:
        load_pretrain_config(str(path))
