"""Image augmentations: the methods' recipes (BYOL, MoCo v2 / CLSA weak, CLSA strong, multi-view)
over torchvision transforms v2, and the photometric operations as parameter vectors
(``photometric``: specs and sampling) with their kernels: fast CPU (``photometric_cpu``, run by
``augment``), batched on any device (``photometric_batch``, run by ``device``) and the torchvision
reference (``photometric_reference``)."""
