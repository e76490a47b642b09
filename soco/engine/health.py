"""The representation-health monitor of every pretraining run (``PRETRAIN.HEALTH``).

Every ``PERIOD`` iterations and after the last one, on the main process, the hook measures the
online ResNet (the part a detector inherits) and the method's state with the pure functions of
``soco.modeling.health`` and writes them to the EventStorage (``metrics.json``, TensorBoard):

* ``health/norm_ratio_<stage>``: the largest weight-norm ratio against the start over the
  stage's convolutions (stem, res2, ..., res5);
* ``health/stem_rank`` and ``health/stem_top_share``: effective rank of the stem's filters and
  the share of its top direction;
* ``health/stem_bn_var_max``, ``health/bn_var_max``: the largest running variance of the
  stem's BatchNorm, and of any BatchNorm of the ResNet;
* ``health/embed_std`` (and ``health/embed_std_ideal`` = 1/sqrt(D)): per-dimension std of the
  normalised projector outputs of the latest forward pass;
* ``health/<head>_occupied_frac`` and ``health/<head>_entropy`` for the clustering methods
  (``PretrainMetaArch.health_assignments``).

Optionally (``KNN_PERIOD`` > 0) a :class:`KNNMonitor` adds ``health/knn_top1``: the weighted
kNN top-1 of the backbone's features on a small labelled bank (Fashion-MNIST).

When a metric crosses its threshold, a warning names the metric, the layer and the iteration
(once per metric and layer). At the end the hook logs a one-line summary and writes
``OUTPUT_DIR/health.json`` (the last values, the thresholds and the warnings). The starting
norms are checkpointed with the trainer, so a resumed run keeps comparing with the true start.
"""

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import nn

from ..modeling.health import (
    assignment_stats,
    conv_weight_norms,
    effective_rank,
    embedding_std,
    max_bn_running_var,
    stage_norm_ratios,
)
from ..utils.files import atomic_write_json
from .hooks import unwrap_model

__all__ = ["HealthThresholds", "HealthMonitorHook", "KNNMonitor", "online_resnet", "health_summary", "HEALTH_FILE"]

logger = logging.getLogger(__name__)

HEALTH_FILE = "health.json"


@dataclass(frozen=True)
class HealthThresholds:
    """When a warning is raised (``PRETRAIN.HEALTH``; see soco/config/common.py)."""

    norm_ratio_max: float = 5.0
    stem_rank_min: float = 8.0
    embed_std_min_frac: float = 0.2
    occupied_min_frac: float = 0.1

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "HealthThresholds":
        h = cfg.PRETRAIN.HEALTH
        return cls(h.NORM_RATIO_MAX, h.STEM_RANK_MIN, h.EMBED_STD_MIN_FRAC, h.OCCUPIED_MIN_FRAC)


class KNNMonitor:
    """Weighted-kNN top-1 (%) of a model's ``image_features`` (the online backbone's pooled
    features, eval mode: BN running statistics) on a labelled bank.

    ``bank``, ``queries``: (uint8 images (N, 3, H, W) RGB, int64 labels (N,)), resized once to
    ``size`` px; ``k``, ``temperature``: :func:`soco.evaluation.knn.knn_accuracy`'s."""

    def __init__(self, bank: Tuple[torch.Tensor, torch.Tensor], queries: Tuple[torch.Tensor, torch.Tensor],
                 size: int, k: int = 20, temperature: float = 0.07, batch: int = 256):
        from torchvision.transforms import v2

        resize = v2.Resize(size, antialias=True)
        self.bank, self.bank_labels = resize(bank[0]), bank[1]
        self.queries, self.query_labels = resize(queries[0]), queries[1]
        self.k, self.temperature, self.batch = int(k), float(temperature), int(batch)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "KNNMonitor":
        """Fashion-MNIST: ``KNN_BANK`` training and ``KNN_QUERIES`` test images (``PRETRAIN.HEALTH``)."""
        from ..embedded.fashion_mnist import fashion_mnist_subset

        h = cfg.PRETRAIN.HEALTH
        return cls(fashion_mnist_subset("train", h.KNN_BANK), fashion_mnist_subset("test", h.KNN_QUERIES),
                   h.KNN_SIZE, h.KNN_K)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        from ..evaluation.knn import knn_accuracy  # scikit-learn and scipy come with the package

        was_training = model.training
        model.eval()
        try:
            bank = torch.cat([model.image_features(x) for x in self.bank.split(self.batch)])
            queries = torch.cat([model.image_features(x) for x in self.queries.split(self.batch)])
        finally:
            model.train(was_training)
        device = bank.device
        return 100.0 * knn_accuracy(bank, self.bank_labels.to(device), queries, self.query_labels.to(device),
                                    self.k, self.temperature)


def online_resnet(model: nn.Module) -> nn.Module:
    """The online ResNet a detector inherits: ``backbone`` (image-level methods) or its
    ``bottom_up`` (SoCo's FPN)."""
    backbone = unwrap_model(model).backbone
    return getattr(backbone, "bottom_up", backbone)


def health_summary(metrics: Dict[str, float]) -> str:
    """One line from the ``health/*`` metrics of a check (keys without the prefix)."""
    stages = [k[len("norm_ratio_"):] for k in metrics if k.startswith("norm_ratio_")]
    parts = ["weight norm x start: " + ", ".join(f"{s} {metrics['norm_ratio_' + s]:.2f}" for s in stages)]
    if "stem_rank" in metrics:
        parts.append(f"stem effective rank {metrics['stem_rank']:.1f} (top direction {metrics['stem_top_share']:.2f})")
    if "stem_bn_var_max" in metrics:
        parts.append(f"stem BN running_var max {metrics['stem_bn_var_max']:.3g}")
    if "bn_var_max" in metrics:
        parts.append(f"any BN {metrics['bn_var_max']:.3g}")
    if "embed_std" in metrics:
        parts.append(f"embedding std {metrics['embed_std']:.3f} (ideal {metrics['embed_std_ideal']:.3f})")
    if "knn_top1" in metrics:
        parts.append(f"kNN top-1 {metrics['knn_top1']:.1f} %")
    for key in metrics:
        if key.endswith("_occupied_frac"):
            head = key[: -len("_occupied_frac")]
            parts.append(f"{head} occupied {metrics[key]:.0%} (entropy {metrics[head + '_entropy']:.2f})")
    return "; ".join(parts)


class HealthMonitorHook(HookBase):
    """Measures representation health every ``period`` iterations and after the last one
    (``period`` 0: never). ``output_dir``: where ``health.json`` goes ("" = nowhere); ``knn``
    (e.g. a :class:`KNNMonitor`): model -> top-1 %, run every ``knn_period`` iterations and
    after the last one."""

    def __init__(self, model: nn.Module, period: int, thresholds: HealthThresholds = HealthThresholds(),
                 output_dir: str = "", knn: Optional[Callable[[nn.Module], float]] = None, knn_period: int = 0):
        self._model = unwrap_model(model)
        self.period = int(period)
        self.thresholds = thresholds
        self.output_dir = output_dir
        self.initial_norms: Dict[str, float] = {}
        self.latest: Dict[str, float] = {}
        self.warnings: List[str] = []
        self._warned = set()
        self._embeddings: Optional[torch.Tensor] = None
        self._handle = None
        self._layers: Dict[str, str] = {}  # metric key -> the layer it was measured on
        self._checked_at = -1
        self.knn, self.knn_period = knn, int(knn_period)
        self.knn_top1: Optional[float] = None

    @property
    def _active(self) -> bool:
        return self.period > 0 and comm.is_main_process()

    # ----------------------------------------------------------------------------- lifecycle
    def before_train(self):
        if not self._active:
            return
        if not self.initial_norms:  # a resumed run has them from the checkpoint
            self.initial_norms = conv_weight_norms(online_resnet(self._model))
        projector = getattr(self._model, "projector", None)
        if projector is not None:
            self._handle = projector.register_forward_hook(self._keep_output)

    def _keep_output(self, module, inputs, output):
        self._embeddings = output.detach()  # a reference only: the check reads it at its period

    def after_step(self):
        it = self.trainer.iter
        last = it >= self.trainer.max_iter - 1
        if self._active and ((it + 1) % self.period == 0 or last):
            self.check(it)
        if self._active and self.knn is not None and self.knn_period > 0 and ((it + 1) % self.knn_period == 0 or last):
            self.knn_top1 = float(self.knn(self._model))
            self.trainer.storage.put_scalar("health/knn_top1", self.knn_top1, smoothing_hint=False)

    def after_train(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if not self._active or not self.latest:
            return
        metrics = {**self.latest, **({"knn_top1": self.knn_top1} if self.knn_top1 is not None else {})}
        logger.info(f"Representation health at iteration {self._checked_at}: {health_summary(metrics)}"
                    + (f"; {len(self.warnings)} warning(s)" if self.warnings else ""))
        if self.output_dir:
            atomic_write_json(os.path.join(self.output_dir, HEALTH_FILE), {
                "iteration": self._checked_at, "metrics": metrics,
                "thresholds": asdict(self.thresholds), "warnings": self.warnings,
            })

    def state_dict(self):
        return {"initial_norms": dict(self.initial_norms)}

    def load_state_dict(self, state_dict):
        self.initial_norms = dict(state_dict.get("initial_norms", {}))

    # ----------------------------------------------------------------------------- the check
    def measure(self) -> Dict[str, float]:
        """The health metrics of the model now (keys without the ``health/`` prefix)."""
        resnet = online_resnet(self._model)
        out: Dict[str, float] = {}
        self._layers = {}
        for stage, (ratio, name) in stage_norm_ratios(conv_weight_norms(resnet), self.initial_norms).items():
            out[f"norm_ratio_{stage}"] = ratio
            self._layers[f"norm_ratio_{stage}"] = name
        stem = getattr(getattr(resnet, "stem", None), "conv1", None)
        if stem is not None:
            out["stem_rank"], out["stem_top_share"] = effective_rank(stem.weight)
            self._layers["stem_rank"] = "stem.conv1"
        variances = max_bn_running_var(resnet)
        if variances:
            if "stem.conv1.norm" in variances:
                out["stem_bn_var_max"] = variances["stem.conv1.norm"]
            out["bn_var_max"] = max(variances.values())
            self._layers["bn_var_max"] = max(variances, key=variances.get)
        if self._embeddings is not None and self._embeddings.ndim == 2 and self._embeddings.shape[0] >= 2:
            out["embed_std"] = embedding_std(self._embeddings)
            out["embed_std_ideal"] = 1.0 / math.sqrt(self._embeddings.shape[1])
            self._layers["embed_std"] = "projector"
        for head, (labels, k) in self._model.health_assignments().items():
            stats = assignment_stats(labels, k)
            out[f"{head}_occupied_frac"], out[f"{head}_entropy"] = stats["occupied_frac"], stats["entropy"]
            self._layers[f"{head}_occupied_frac"] = head
        return out

    def check(self, iteration: int) -> Dict[str, float]:
        """Measure, write ``health/*`` scalars at ``iteration`` and warn on crossed thresholds."""
        metrics = self.measure()
        self.latest, self._checked_at = metrics, iteration
        self.trainer.storage.put_scalars(**{f"health/{k}": v for k, v in metrics.items()}, smoothing_hint=False)
        for key, message in self._crossed(metrics):
            layer = self._layers.get(key, "")
            if (key, layer) in self._warned:
                continue
            self._warned.add((key, layer))
            text = f"health: {key} of {layer} {message} at iteration {iteration}"
            self.warnings.append(text)
            logger.warning(text)
        return metrics

    def _crossed(self, metrics: Dict[str, float]):
        """(metric key, what crossed) for every metric beyond its threshold."""
        t = self.thresholds
        for key, value in metrics.items():
            if key.startswith("norm_ratio_") and value > t.norm_ratio_max:
                yield key, f"is {value:.2f} x its start (threshold {t.norm_ratio_max:g})"
            elif key == "stem_rank" and value < t.stem_rank_min:
                yield key, f"is {value:.1f} (threshold {t.stem_rank_min:g}; 64 random filters: ~51)"
            elif key == "embed_std" and value < t.embed_std_min_frac * metrics["embed_std_ideal"]:
                yield key, (f"is {value:.4f}, below {t.embed_std_min_frac:g} x 1/sqrt(D) = "
                            f"{t.embed_std_min_frac * metrics['embed_std_ideal']:.4f} (collapse)")
            elif key.endswith("_occupied_frac") and value < t.occupied_min_frac:
                yield key, f"is {value:.1%} of the clusters (threshold {t.occupied_min_frac:.0%})"
