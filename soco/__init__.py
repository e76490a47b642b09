"""soco: detection-oriented self-supervised pretraining (SoCo, CoKe, CLSA, SMoG) for Detectron2."""

__version__ = "0.1.0"
