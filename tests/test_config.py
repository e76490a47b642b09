"""Config: every pretraining key has a default; wrong keys and wrong types name the key."""

import pytest

from soco.config import add_pretrain_config, get_pretrain_cfg, load_pretrain_config


def test_defaults_follow_the_papers():
    cfg = get_pretrain_cfg()
    assert cfg.PRETRAIN.EPOCHS == 100 and cfg.PRETRAIN.WARMUP_EPOCHS == 10
    assert cfg.SOLVER.LARS.TRUST_COEF == 0.001
    assert cfg.MODEL.EMA.MOMENTUM == 0.99 and cfg.MODEL.EMA.MOMENTUM_END == 1.0
    assert (cfg.MODEL.PROJECTOR.HIDDEN_DIM, cfg.MODEL.PROJECTOR.OUT_DIM) == (4096, 256)
    for method in ("SOCO", "COKE", "CLSA", "SMOG"):
        assert method in cfg.MODEL


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
