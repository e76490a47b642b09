"""Modeling: meta-architectures (registered in Detectron2's META_ARCH_REGISTRY), heads, losses, EMA."""
