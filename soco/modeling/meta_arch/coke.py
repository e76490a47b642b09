"""CoKe (Qian et al., CVPR 2022): online constrained k-means as the pretext task.

Each clustering head keeps K centres, K dual variables and one label per training instance.
Per batch: the (all-gathered) mean projection of the large views is assigned by
y_i = argmax_k (s_ik + rho_k) (supplementary eq. 1), the duals take one projected-gradient
step so every cluster keeps at least LOWER_BOUND_RATIO * N / K instances, the centres take an
online k-means step and the label buffer is overwritten. The network is trained to classify
each view into last epoch's label (cross-entropy of x^T c / lambda against last epoch's
centres), softened for two views by the other view's prediction (supplementary 2.2.3), on the
projector and the predictor outputs (2.2.4). At each epoch end the running centres become the
loss's centres and the running counts restart (official ``update_center``).

Single-view second stage (supplementary 2.2.2, ``SECOND_STAGE_EPOCH`` >= 0): from that epoch on,
labels are assigned against last epoch's centres, each instance's target is the moving average
of its one-hot labels over the second-stage epochs (5 largest entries kept, softmax at
temperature 0.5 over them), and the centres are averaged over epochs instead of replaced.
The first ``INIT_EPOCHS`` only initialise the clusters: the method asks the trainer for lr 0
during them (``zero_lr_iterations``), as the official code.

Per-instance buffers are sized from the dataset (``num_images``, passed by the engine with
``iters_per_epoch``), unlike the official code's hard-coded ImageNet size.
"""

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ..distributed import concat_all_gather
from ..losses.coke import (
    constrained_assignment,
    dual_update,
    moving_average_label_update,
    running_center_update,
    soft_cross_entropy,
    sparse_label_targets,
    two_view_soft_targets,
)
from .base import ImageLevelMetaArch

__all__ = ["CoKe"]


@META_ARCH_REGISTRY.register()
class CoKe(ImageLevelMetaArch):
    """Online: backbone, projector (+ output BN), predictor (when BETA > 0). No target network.

    Buffers per head h: ``centers_{h}`` (K, D) running centres used for assignment,
    ``loss_centers_{h}`` (K, D) last epoch's centres used by the loss, ``duals_{h}`` (K,),
    ``counts_{h}`` (K,) instances assigned this epoch; ``labels`` (H, N) last label of every
    instance (-1: never seen); ``epoch`` (completed epochs); with a second stage also
    ``label_ids`` / ``label_values`` (H, N, SECOND_STAGE_LABELS) sparse moving-average labels.
    """

    needs_dataset_size = True

    @configurable
    def __init__(self, *, num_images: int, iters_per_epoch: int, num_clusters: Sequence[int], num_views: int = 2,
                 temperature: float = 0.05, alpha: float = 0.2, beta: float = 0.5, dual_lr: float = 20.0,
                 lower_bound_ratio: float = 0.4, init_epochs: int = 1, second_stage_epoch: int = -1,
                 second_stage_labels: int = 5, second_stage_temperature: float = 0.5, **kwargs):
        """``num_images``: training instances (one label each); ``iters_per_epoch``: optimiser
        steps per epoch, from the engine (``soco.engine.build_training_model``; 0 for a model
        rebuilt to export or evaluate, which cannot train); the rest as ``MODEL.COKE``.
        Other arguments go to :class:`ImageLevelMetaArch` (no target network)."""
        super().__init__(with_target=False, **kwargs)
        if num_images <= 0:
            raise ValueError(
                "CoKe keeps one label per training image and needs the dataset size num_images > 0 "
                "(the engine passes it; a saved run records it as PRETRAIN.NUM_IMAGES)"
            )
        if num_views < 1 or not 0.0 <= beta <= 1.0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"MODEL.COKE: need NUM_VIEWS >= 1, 0 <= BETA <= 1, 0 <= ALPHA <= 1; got NUM_VIEWS={num_views}, "
                f"BETA={beta}, ALPHA={alpha}"
            )
        self.num_clusters = [int(k) for k in num_clusters]
        self.num_views = int(num_views)
        self.temperature, self.alpha, self.beta = float(temperature), float(alpha), float(beta)
        self.dual_lr, self.ratio, self.init_epochs = float(dual_lr), float(lower_bound_ratio), int(init_epochs)
        self.iters_per_epoch = int(iters_per_epoch)  # 0: rebuilt to export or evaluate, not to train
        self.second_stage = int(second_stage_epoch)
        self.label_temperature = float(second_stage_temperature)
        if self.second_stage >= 0 and (self.num_views != 1 or self.second_stage <= self.init_epochs):
            raise ValueError(
                f"MODEL.COKE.SECOND_STAGE_EPOCH={self.second_stage} needs NUM_VIEWS = 1 (the supplementary "
                f"keeps one stage for two views; got {self.num_views}) and must come after INIT_EPOCHS="
                f"{self.init_epochs}"
            )
        dim = self.projector.out_dim
        for h, k in enumerate(self.num_clusters):
            centers = F.normalize(torch.randn(k, dim), dim=1)
            self.register_buffer(f"centers_{h}", centers)
            self.register_buffer(f"loss_centers_{h}", centers.clone())
            self.register_buffer(f"duals_{h}", torch.zeros(k))
            self.register_buffer(f"counts_{h}", torch.zeros(k))
        self.register_buffer("labels", torch.full((len(self.num_clusters), num_images), -1, dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        if self.second_stage >= 0:
            shape = (len(self.num_clusters), num_images, int(second_stage_labels))
            self.register_buffer("label_ids", torch.zeros(shape, dtype=torch.long))
            self.register_buffer("label_values", torch.zeros(shape))

    @classmethod
    def from_config(cls, cfg: CfgNode, num_images: int = 0, iters_per_epoch: int = 0) -> Dict[str, Any]:
        c = cfg.MODEL.COKE
        return {
            **super().from_config(cfg, with_predictor=c.BETA > 0, projector_output_bn=c.PROJECTOR_OUTPUT_BN),
            "num_images": int(num_images),
            "iters_per_epoch": int(iters_per_epoch),
            "num_clusters": list(c.NUM_CLUSTERS),
            "num_views": c.NUM_VIEWS,
            "temperature": c.TEMPERATURE,
            "alpha": c.ALPHA,
            "beta": c.BETA,
            "dual_lr": c.DUAL_LR,
            "lower_bound_ratio": c.LOWER_BOUND_RATIO,
            "init_epochs": c.INIT_EPOCHS,
            "second_stage_epoch": c.SECOND_STAGE_EPOCH,
            "second_stage_labels": c.SECOND_STAGE_LABELS,
            "second_stage_temperature": c.SECOND_STAGE_TEMPERATURE,
        }

    @classmethod
    def zero_lr_iterations(cls, cfg: CfgNode, iters_per_epoch: int) -> int:
        """The INIT_EPOCHS epochs that only initialise the clusters run at lr 0 (official code)."""
        return int(cfg.MODEL.COKE.INIT_EPOCHS) * int(iters_per_epoch)

    @torch.no_grad()
    def cluster_assignments(self, images: torch.Tensor) -> List[torch.Tensor]:
        """(N, 3, H, W) RGB 0-255 -> per head, (N,) index of the closest of last epoch's
        centres to the normalised projection (what the loss classifies against)."""
        z = F.normalize(self.project(self.normalize(images)), dim=1)
        return [(z @ getattr(self, f"loss_centers_{h}").t()).argmax(dim=1) for h in range(len(self.num_clusters))]

    def in_second_stage(self) -> bool:
        return 0 <= self.second_stage <= int(self.epoch)

    def health_assignments(self) -> Dict[str, Tuple[torch.Tensor, int]]:
        """Every head's last label of each instance (-1: not seen yet)."""
        return {f"coke_head{h}": (self.labels[h], k) for h, k in enumerate(self.num_clusters)}

    # ----------------------------------------------------------------------------- clustering
    @torch.no_grad()
    def update_clusters(self, feats: torch.Tensor, index: torch.Tensor) -> None:
        """Assign ``feats`` (M, D) unit rows of instances ``index`` (M,), step duals and centres.

        In the second stage the assignment uses last epoch's centres and the running centres are
        plain means (official ``gen_label`` / ``update_center_mini_batch``)."""
        second = self.in_second_stage()
        for h, k in enumerate(self.num_clusters):
            centers, duals = getattr(self, f"centers_{h}"), getattr(self, f"duals_{h}")
            assign_to = getattr(self, f"loss_centers_{h}") if second else centers
            labels = constrained_assignment(feats @ assign_to.t(), duals)
            bound = torch.full_like(duals, self.ratio / k)
            duals.copy_(dual_update(duals, labels, bound, self.dual_lr, project=self.ratio < 1))
            new_centers, new_counts = running_center_update(
                centers, getattr(self, f"counts_{h}"), feats, labels, normalize=not second
            )
            centers.copy_(new_centers)
            getattr(self, f"counts_{h}").copy_(new_counts)
            self.labels[h, index] = labels
            if second:
                self._average_labels(h, index, labels)

    @torch.no_grad()
    def _average_labels(self, head: int, index: torch.Tensor, labels: torch.Tensor) -> None:
        """Second stage: fold this epoch's ``labels`` (M,) into the sparse moving averages."""
        epochs_in = int(self.epoch) - self.second_stage
        if epochs_in == 0:
            ids, values = torch.zeros_like(self.label_ids[head, index]), torch.zeros_like(self.label_values[head, index])
            ids[:, 0], values[:, 0] = labels, 1.0
        else:
            ids, values = moving_average_label_update(
                self.label_ids[head, index], self.label_values[head, index], labels, 1.0 / (epochs_in + 1)
            )
        self.label_ids[head, index], self.label_values[head, index] = ids, values

    # ----------------------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        views = self.preprocess_images(batched_inputs, "views")
        if len(views) < self.num_views:
            raise ValueError(f"CoKe expects at least MODEL.COKE.NUM_VIEWS={self.num_views} views, got {len(views)}")
        index = torch.tensor([b["instance_index"] for b in batched_inputs], device=self.device)
        projections = [self.project(v) for v in views]
        proj = [F.normalize(p, dim=1) for p in projections]
        pred = [F.normalize(self.predictor(p), dim=1) for p in projections] if self.predictor is not None else None

        init_phase = int(self.epoch) < self.init_epochs
        with torch.no_grad():
            previous = self.labels[:, index].clone()
            # After the second stage's first epoch the target is the averaged (soft) label.
            averaged = (
                [sparse_label_targets(self.label_ids[h, index], self.label_values[h, index], k, self.label_temperature)
                 for h, k in enumerate(self.num_clusters)]
                if self.second_stage >= 0 and int(self.epoch) > self.second_stage
                else None
            )
            # Official code clusters the mean of the large views' projections; renormalised here
            # so that s_ik is a cosine similarity, as the paper defines it.
            feats = F.normalize(torch.stack(proj[: self.num_views]).mean(dim=0), dim=1)
            self.update_clusters(concat_all_gather(feats), concat_all_gather(index))
            current = self.labels[:, index]
            # During the initialisation epochs (official: epoch 0) and for instances never seen,
            # the target is the label just assigned.
            hard = current if init_phase else torch.where(previous >= 0, previous, current)
            targets = averaged or [F.one_hot(t, k).float() for t, k in zip(hard, self.num_clusters)]

        loss = self._head_losses(proj, targets)
        if pred is not None:
            loss = self.beta * self._head_losses(pred, targets, soft_from=proj) + (1.0 - self.beta) * loss
        counts = self.counts_0
        # Logged metrics as tensors: the trainer reads them at LOG_PERIOD (no per-step sync).
        return {
            "loss_coke": loss,
            "coke_epoch": self.epoch.float(),
            "coke_min_cluster_frac": counts.min() * len(counts) / counts.sum().clamp_min(1),
        }

    def _head_losses(self, feats: List[torch.Tensor], targets: List[torch.Tensor], soft_from=None) -> torch.Tensor:
        """Mean over heads and views of the (soft) cross-entropy of ``feats`` (list over views
        of (N, D) unit rows) classified against last epoch's centres. ``targets``: per head,
        (N, K_h) label distributions; with several views they are softened by the other large
        views' predictions from the projections ``soft_from`` (default ``feats``)."""
        soft_from = feats if soft_from is None else soft_from
        total, terms = 0.0, 0
        for h, k in enumerate(self.num_clusters):
            centers = getattr(self, f"loss_centers_{h}")
            logits = [f @ centers.t() / self.temperature for f in feats]
            with torch.no_grad():
                probs = [F.softmax(s @ centers.t() / self.temperature, dim=1) for s in soft_from[: self.num_views]]
            for v, lg in enumerate(logits):
                if self.num_views == 1:
                    target = targets[h]
                else:
                    others = [p for u, p in enumerate(probs) if u != v]
                    target = two_view_soft_targets(targets[h], torch.stack(others).mean(dim=0), self.alpha)
                total = total + soft_cross_entropy(lg, target).mean()
                terms += 1
        return total / terms

    # ----------------------------------------------------------------------------- schedule
    @torch.no_grad()
    def on_step_end(self, iteration: int, max_iter: int) -> None:
        """At each epoch end: the running centres become the loss's centres (second stage: the
        loss's centres move to their average over the second-stage epochs, and the running
        centres restart from it, official ``update_center``); counts restart."""
        if self.iters_per_epoch <= 0:
            raise RuntimeError(
                "CoKe was built without its iterations per epoch (iters_per_epoch=0), so it cannot tell "
                "where an epoch ends; build it to train with soco.engine.build_training_model"
            )
        if (iteration + 1) % self.iters_per_epoch == 0:
            second = self.in_second_stage()
            factor = 1.0 / (int(self.epoch) - self.second_stage + 1) if second else 1.0
            for h in range(len(self.num_clusters)):
                loss_centers, centers = getattr(self, f"loss_centers_{h}"), getattr(self, f"centers_{h}")
                new = F.normalize((1.0 - factor) * loss_centers + factor * F.normalize(centers, dim=1), dim=1)
                loss_centers.copy_(new)
                centers.copy_(new)
                getattr(self, f"counts_{h}").zero_()
            self.epoch += 1
