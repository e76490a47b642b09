"""Image augmentations (torchvision transforms v2): BYOL, multi-view, CLSA strong, MoCo v2."""
