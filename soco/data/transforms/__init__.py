"""Image augmentations: BYOL, multi-view, CLSA strong, MoCo v2 (torchvision transforms v2), and the
photometric operations as parameter vectors with fast CPU (``photometric``, ``augment``) and
batched device (``device``) kernels."""
