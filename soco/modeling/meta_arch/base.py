"""Shared base of every pretraining meta-architecture, and the image-level mixin.

Contract between the data, the methods and the trainer
------------------------------------------------------
* **Pixels.** Mappers emit RGB uint8 tensors (3, H, W), values 0-255. ``preprocess_images``
  converts them to float and normalises with ``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD`` (ImageNet
  mean/std in RGB order, 0-255 scale, set in ``configs/Base-Pretrain.yaml`` with
  ``INPUT.FORMAT: RGB``). The ResNet uses ``MODEL.RESNETS.STRIDE_IN_1X1: False`` (stride in the
  3x3 conv, torchvision style). Fine-tune configs must use the same three settings.
* **Batches.** The trainer calls ``forward(batched_inputs)`` with a list (one entry per image of
  this process's micro-batch) of the dicts returned by the method's mapper
  (``soco.data.method_data``; the model never sees files, mappers or proposal formats).
  Every mapper returns ``{"views": [Tensor(3, H_v, W_v) uint8, ...], "image_id": str, ...}``:
  view v has the same size for every image, so ``preprocess_images(batched_inputs, "views")``
  stacks view v of all images into one (N, 3, H_v, W_v) batch. Methods add their own keys (SoCo: per-view boxes; CoKe: the
  dataset index) and may keep several view lists under other keys (e.g. CLSA's strong views).
  A mapper may return ``None`` for an unreadable image; the loader then takes the next image.
* **Losses.** ``forward`` returns a dict: entries whose names start with ``loss_`` are summed
  and back-propagated by the trainer; other scalar tensors are only logged.
* **Steps.** The trainer calls ``on_step_start(iteration, max_iter)`` before the forward pass(es)
  of an optimiser step and ``on_step_end(iteration, max_iter)`` after the optimiser step
  (``iteration`` is 0-based, ``max_iter`` the resolved length). The default ``on_step_end``
  moves the target network by EMA with the model's ``MomentumSchedule`` (built from ``MODEL.EMA``:
  BYOL's cosine, or constant for MoCo-style momentum encoders).
* **Names.** Online modules carry stock Detectron2 names (``backbone`` = a Detectron2 ResNet for
  image-level methods); the EMA / momentum copy lives under ``target.`` with the same sub-names
  (``target.backbone.*``, ``target.projector.*``). State is buffers, so checkpoints resume.
* **Norm.** Networks are built with plain BN; the trainer converts every BatchNorm to
  SyncBatchNorm on GPU under DDP (``PRETRAIN.SYNC_BN``), so world size 1 on CPU always works.
"""

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import ResNet, build_resnet_backbone
from detectron2.utils.events import get_event_storage
from torch import nn

from ..ema import MomentumSchedule, ema_update_
from ..heads import MLPHead, build_predictor, build_projector

__all__ = [
    "PretrainMetaArch",
    "ImageLevelMetaArch",
    "backbone_build_cfg",
    "build_pretrain_resnet",
    "put_scalars",
]

ExportSpec = Dict[str, List[Tuple[str, str]]]


def backbone_build_cfg(cfg: CfgNode) -> CfgNode:
    """A copy of ``cfg`` to hand to Detectron2's backbone builders during pretraining.

    BatchNorm is built as plain "BN" (the trainer converts it to SyncBN where it applies);
    FrozenBN and frozen stages are refused because pretraining trains every layer.
    """
    norm = cfg.MODEL.RESNETS.NORM
    if norm == "FrozenBN":
        raise ValueError("MODEL.RESNETS.NORM=FrozenBN cannot be pretrained; use BN (or GN)")
    if cfg.MODEL.BACKBONE.FREEZE_AT != 0:
        raise ValueError(
            f"MODEL.BACKBONE.FREEZE_AT={cfg.MODEL.BACKBONE.FREEZE_AT}: pretraining trains every "
            "stage; set it to 0 (configs/Base-Pretrain.yaml does)"
        )
    out = cfg.clone()
    out.defrost()
    if norm == "SyncBN":
        out.MODEL.RESNETS.NORM = "BN"
    if out.MODEL.FPN.NORM == "SyncBN":
        out.MODEL.FPN.NORM = "BN"
    out.freeze()
    return out


def build_pretrain_resnet(cfg: CfgNode, out_features: Sequence[str] = ("res5",)) -> ResNet:
    """Detectron2's ResNet (depth, widths, STRIDE_IN_1X1 from cfg) returning ``out_features``."""
    bcfg = backbone_build_cfg(cfg)
    bcfg.defrost()
    bcfg.MODEL.RESNETS.OUT_FEATURES = list(out_features)
    bcfg.freeze()
    return build_resnet_backbone(bcfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))


def put_scalars(**values: float) -> None:
    """Log scalars to the current EventStorage; a no-op outside a training loop (unit tests)."""
    try:
        storage = get_event_storage()
    except AssertionError:
        return
    storage.put_scalars(**values)


class PretrainMetaArch(nn.Module):
    """Base of every pretraining method (see the module docstring for the full contract).

    Built from explicit arguments; ``Method(cfg)`` goes through ``from_config`` (Detectron2's
    ``@configurable``), which reads every key once. Models keep no cfg.
    """

    #: True for methods that keep per-image state (CoKe): the engine then passes the dataset size
    #: ``num_images`` and ``iters_per_epoch`` to the constructor (``build_pretrain_model``).
    needs_dataset_size = False

    @configurable
    def __init__(self, *, pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 ema: Optional[MomentumSchedule] = None, channels_last: bool = False):
        """``pixel_mean`` / ``pixel_std``: per channel, 0-255 scale; ``ema``: the target's tau
        schedule (unused by methods without a target); ``channels_last``: memory format of inputs."""
        super().__init__()
        mean, std = pixel_mean, pixel_std
        if len(mean) != len(std):
            raise ValueError(f"MODEL.PIXEL_MEAN {mean} and MODEL.PIXEL_STD {std} differ in length")
        self.register_buffer("pixel_mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        self.channels_last = bool(channels_last)
        self.ema = ema
        self.target: Optional[nn.ModuleDict] = None

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        return {
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "ema": MomentumSchedule.from_config(cfg),
            "channels_last": bool(cfg.PRETRAIN.CHANNELS_LAST),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ----------------------------------------------------------------------------- inputs
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB 0-255 (uint8 or float, any device) -> float, normalised, on the model's device."""
        x = (images.to(self.device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB 0-255 -> (N, C) globally average-pooled res5 features of the online
        ResNet: the representation that evaluation (kNN, linear probe) reads."""
        raise NotImplementedError(f"{type(self).__name__} must implement image_features")

    def preprocess_images(self, batched_inputs: List[Dict[str, Any]], key: str = "views") -> List[torch.Tensor]:
        """Stack view v of every image: list over views of (N, 3, H_v, W_v) float normalised."""
        num_views = len(batched_inputs[0][key])
        if any(len(x[key]) != num_views for x in batched_inputs):
            raise ValueError(f"images of one batch carry different numbers of '{key}'")
        return [self.normalize(self._stack_for_device([b[key][v] for b in batched_inputs])) for v in range(num_views)]

    def _stack_for_device(self, tensors: List[torch.Tensor]) -> torch.Tensor:
        """Stack CPU tensors and move them to the model's device. For a GPU, the stack is
        written into pinned memory when the inputs are pinned (the loader's pin_memory), so
        the copy is really asynchronous (a pageable stack would make it synchronous)."""
        first = tensors[0]
        if self.device.type == "cuda" and first.device.type == "cpu" and first.is_pinned():
            stacked = torch.empty((len(tensors), *first.shape), dtype=first.dtype, pin_memory=True)
            return torch.stack(tensors, out=stacked).to(self.device, non_blocking=True)
        return torch.stack(tensors).to(self.device, non_blocking=True)

    # ----------------------------------------------------------------------------- target
    def make_target(self, *names: str) -> None:
        """Deep-copy the online sub-modules ``names`` into ``self.target`` (no gradients)."""
        self.target = nn.ModuleDict({n: copy.deepcopy(getattr(self, n)) for n in names})
        self.target.requires_grad_(False)

    def target_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        """(target, online) module pairs: every target entry with an online module of its name.
        Target-only entries (SMoG's momentum-branch predictor) are neither averaged nor reset."""
        if self.target is None:
            raise RuntimeError(f"{type(self).__name__} has no target network (call make_target)")
        return [(t, getattr(self, n)) for n, t in self.target.items() if getattr(self, n, None) is not None]

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """target <- tau * target + (1 - tau) * online, for every pair of :meth:`target_pairs`."""
        for target, online in self.target_pairs():
            ema_update_(target, online, tau)

    @torch.no_grad()
    def reset_target(self) -> None:
        """Copy the online weights and buffers into the target (SMoG's periodic reset)."""
        for target, online in self.target_pairs():
            target.load_state_dict(online.state_dict())

    def target_momentum(self, iteration: int, max_iter: int) -> float:
        """tau of the EMA after step ``iteration``, from the schedule built once (``self.ema``)."""
        if self.ema is None:
            raise RuntimeError(f"{type(self).__name__} was built without an EMA schedule")
        return self.ema(iteration, max_iter)

    # ----------------------------------------------------------------------------- hooks
    def on_step_start(self, iteration: int, max_iter: int) -> None:
        """Called before the forward pass(es) of optimiser step ``iteration``."""

    def on_step_end(self, iteration: int, max_iter: int) -> None:
        """Called after the optimiser step: EMA update of the target network, if there is one."""
        if self.target is not None:
            tau = self.target_momentum(iteration, max_iter)
            self.update_target(tau)
            put_scalars(ema_tau=tau)

    def health_assignments(self) -> Dict[str, Tuple[torch.Tensor, int]]:
        """{name: (labels, K)}: the current cluster or group assignments of a clustering
        method's state (labels: integers in [0, K), negative = unassigned), which the health
        monitor (``soco.engine.health``) checks for collapse. Default: none."""
        return {}

    # ----------------------------------------------------------------------------- classmethods
    @classmethod
    def zero_lr_iterations(cls, cfg: CfgNode, iters_per_epoch: int) -> int:
        """Iterations at the start of the (resolved) schedule to run at lr 0. Default: none.

        ``iters_per_epoch``: optimiser steps per pass over the data (``iterations_per_epoch``)."""
        return 0

    @classmethod
    def export_spec(cls, cfg: CfgNode) -> ExportSpec:
        """Part name -> [(prefix in the online state dict, prefix in a stock Detectron2 detector)].

        Prefixes end with "."; parts are "backbone", "fpn", "head", "res5". Used by the converter.
        """
        raise NotImplementedError(f"{cls.__name__} must implement export_spec")


class ImageLevelMetaArch(PretrainMetaArch):
    """ResNet backbone -> global average pool -> projector (-> predictor), with a target copy.

    Shared by the image-level methods (BYOL, CoKe, CLSA, SMoG). Online modules: ``backbone``
    (Detectron2 ResNet, ``res5`` output), ``projector``, optionally ``predictor``; the target
    copies ``backbone`` and ``projector`` when ``with_target``.
    """

    @configurable
    def __init__(self, *, backbone: ResNet, projector: MLPHead, predictor: Optional[MLPHead] = None,
                 with_target: bool = True, **kwargs):
        """``backbone``: ResNet with a ``res5`` output; ``projector``: res5 channels -> D;
        ``predictor``: D -> D or None; ``with_target``: copy backbone and projector to ``target.``.
        Other arguments go to :class:`PretrainMetaArch`."""
        super().__init__(**kwargs)
        self.backbone = backbone
        self.feature_dim = self.backbone.output_shape()["res5"].channels
        self.projector = projector
        self.predictor = predictor
        if with_target:
            self.make_target("backbone", "projector")

    @classmethod
    def from_config(cls, cfg: CfgNode, with_predictor: bool = True, projector_output_bn: bool = False) -> Dict[str, Any]:
        """The base's arguments plus the networks, built in the order backbone, projector,
        predictor (the order their random initialisations are drawn in)."""
        backbone = build_pretrain_resnet(cfg, ("res5",))
        projector = build_projector(cfg, backbone.output_shape()["res5"].channels, projector_output_bn)
        predictor = build_predictor(cfg) if with_predictor else None
        return {**super().from_config(cfg), "backbone": backbone, "projector": projector, "predictor": predictor}

    def pooled_features(self, images: torch.Tensor, target: bool = False) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, C) globally average-pooled res5 features."""
        backbone = self.target["backbone"] if target else self.backbone
        return backbone(images)["res5"].mean(dim=(2, 3))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.pooled_features(self.normalize(images))

    def project(self, images: torch.Tensor, target: bool = False) -> torch.Tensor:
        """(N, 3, H, W) -> (N, PROJECTOR.OUT_DIM) projections z of the online or target network."""
        projector = self.target["projector"] if target else self.projector
        return projector(self.pooled_features(images, target))

    @classmethod
    def export_spec(cls, cfg: CfgNode) -> ExportSpec:
        # The ResNet is a detector's bottom-up network (FPN detectors); for C4 detectors the
        # converter maps backbone.bottom_up.res5 -> roi_heads.res5 and the rest to backbone.
        return {"backbone": [("backbone.", "backbone.bottom_up.")]}
