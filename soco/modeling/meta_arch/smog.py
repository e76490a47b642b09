"""SMoG (Pang et al., ECCV 2022): group-level contrast with synchronous momentum grouping.

Per iteration, with the two large views given to the streams in alternation (sec. 3.4: the
two BYOL augmentations "adopt one of them in an alternate manner"; here the view order swaps
every iteration):
* online features f(x^a) (backbone -> projector with output BN) of view a and of the small crops;
* momentum features of view b (momentum backbone -> projector, alpha = 0.999);
* each online feature of view a is assigned to its closest group and the groups move by
  g_k <- beta g_k + (1 - beta) mean (eq. 4, normalised), differentiably, so the loss's
  gradient also flows through the group features; beta goes linearly 1.0 -> 0.99;
* c^b = the group closest to view b's momentum feature; loss eq. 3 for view a and every small
  crop against c^b over all groups, temperature 0.1.
Every RESET_PERIOD (300) iterations the groups are re-clustered by k-means over the online
features cached during the period and the momentum network is reset to the online one.
Groups are initialised by k-means over the first batch's features.

Prediction head: the paper's text puts it on the momentum branch ("f_eta has an extra
prediction head stacked on the projection head"), the opposite of BYOL. Eq. 3 uses the momentum
branch only through the argmax that picks c^b, so in that reading the predictor receives no
gradient and no EMA (it has no online counterpart): it stays a frozen random MLP, and c^b is the
group closest to a random map of the momentum projection, not to the projection the groups are
built from. The targets are then close to random: on Fashion-MNIST (ResNet-18, 300 steps) that
placement lowered kNN accuracy while the BYOL placement raised it. The default is therefore
PREDICTOR_BRANCH "online" (lightly's implementation): f(x^a) is the online predictor's output,
the groups are updated with the online projections and c^b is picked with the momentum
projection. "momentum" keeps the literal reading (its predictor lives under ``target.predictor``).

All state (groups, feature cache, counters) is in buffers and identical on every process:
features are all-gathered before they touch the groups or the cache, and the gather passes
gradients back to the process that computed each feature, so the gradient through the group
features is the single-process one at any world size. The cache (RESET_PERIOD x global batch
rows, 629 MB at the 800-epoch setting) is a buffer, so checkpoints carry it and a resumed run
re-groups exactly as an uninterrupted one; the re-grouping k-means works in chunks bounded by
MODEL.SMOG.KMEANS_CHUNK_MB.
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ..distributed import all_gather_with_grad, concat_all_gather
from ..ema import MomentumSchedule
from ..heads import build_predictor
from ..losses.smog import (
    assign_to_groups,
    group_contrastive_loss,
    momentum_group_update,
    nearest_centre,
    spherical_kmeans,
)
from .base import ImageLevelMetaArch, put_scalars

__all__ = ["SMoG"]


@META_ARCH_REGISTRY.register()
class SMoG(ImageLevelMetaArch):
    """Buffers: ``groups`` (L, D) unit rows, ``groups_ready`` (bool), ``cache`` (M, D) ring of
    recent online features, ``cache_ptr``, ``cache_filled`` (valid rows)."""

    @configurable
    def __init__(self, *, momentum_predictor: Optional[nn.Module], cache_size: int, num_groups: int = 3000,
                 temperature: float = 0.1, beta_start: float = 1.0, beta_end: float = 0.99, reset_period: int = 300,
                 kmeans_iters: int = 10, kmeans_chunk_mb: int = 1024, **kwargs):
        """``momentum_predictor``: the predictor of the literal reading (kept under
        ``target.predictor``), or None when the predictor is online (``predictor`` argument);
        ``cache_size``: rows of the feature cache (RESET_PERIOD x SOLVER.IMS_PER_BATCH); the
        rest as ``MODEL.SMOG`` (``kmeans_chunk_mb``: memory bound of the re-grouping k-means'
        similarity blocks, MiB). Other arguments go to :class:`ImageLevelMetaArch`."""
        super().__init__(with_target=True, **kwargs)
        if momentum_predictor is not None:
            self.target["predictor"] = momentum_predictor.requires_grad_(False)
        self.num_groups, self.temperature = int(num_groups), float(temperature)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.reset_period, self.kmeans_iters = int(reset_period), int(kmeans_iters)
        self.kmeans_chunk_bytes = int(kmeans_chunk_mb) * 2**20
        if self.reset_period <= 0 or self.num_groups <= 0:
            raise ValueError(
                f"MODEL.SMOG.RESET_PERIOD and NUM_GROUPS must be > 0, got RESET_PERIOD={self.reset_period}, "
                f"NUM_GROUPS={self.num_groups}"
            )
        dim = self.projector.out_dim
        self.register_buffer("groups", torch.zeros(self.num_groups, dim))
        self.register_buffer("groups_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("cache", torch.zeros(int(cache_size), dim))
        self.register_buffer("cache_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("cache_filled", torch.zeros((), dtype=torch.long))
        # Set by on_step_start (outside any compiled graph, so torch.compile sees a bool and a
        # 0-d tensor, not a new Python number every step, and compiles twice at most).
        self._swap_views, self._init_groups = False, True
        self.register_buffer("beta", torch.tensor(self.beta_start), persistent=False)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        """The Siamese momentum alpha is constant: MODEL.EMA.MOMENTUM (MOMENTUM_END unused)."""
        c = cfg.MODEL.SMOG
        online_predictor = c.PREDICTOR_BRANCH == "online"
        args = super().from_config(cfg, with_predictor=online_predictor, projector_output_bn=c.PROJECTOR_OUTPUT_BN)
        return {
            **args,
            "momentum_predictor": None if online_predictor else build_predictor(cfg),
            "ema": MomentumSchedule.from_config(cfg, constant=True),
            "cache_size": c.RESET_PERIOD * cfg.SOLVER.IMS_PER_BATCH,
            "num_groups": c.NUM_GROUPS,
            "temperature": c.TEMPERATURE,
            "beta_start": c.BETA_START,
            "beta_end": c.BETA_END,
            "reset_period": c.RESET_PERIOD,
            "kmeans_iters": c.KMEANS_ITERS,
            "kmeans_chunk_mb": c.KMEANS_CHUNK_MB,
        }

    # ----------------------------------------------------------------------------- schedule
    def group_momentum(self, iteration: int, max_iter: int) -> float:
        """beta: linear from BETA_START (iteration 0) to BETA_END (iteration max_iter)."""
        frac = min(max(iteration / max(max_iter, 1), 0.0), 1.0)
        return self.beta_start + (self.beta_end - self.beta_start) * frac

    def on_step_start(self, iteration: int, max_iter: int) -> None:
        self._swap_views = iteration % 2 == 1
        self._init_groups = not bool(self.groups_ready)
        beta = self.group_momentum(iteration, max_iter)
        self.beta.fill_(beta)
        put_scalars(smog_beta=beta)

    @torch.no_grad()
    def on_step_end(self, iteration: int, max_iter: int) -> None:
        """Every RESET_PERIOD steps: k-means re-grouping and momentum reset; otherwise EMA. Only
        the layers that exist in both networks are averaged or reset (sec. 3.2; the base's
        ``target_pairs`` skips the momentum-branch predictor)."""
        if (iteration + 1) % self.reset_period == 0 and int(self.cache_filled) > 0:
            self.regroup(seed=iteration)
            self.reset_target()
            put_scalars(smog_reset=1.0)
        else:
            self.update_target(self.target_momentum(iteration, max_iter))

    @torch.no_grad()
    def regroup(self, seed: int) -> None:
        """Groups <- spherical k-means over the cached features (same seed on every process)."""
        cached = self.cache[: int(self.cache_filled)]
        gen = torch.Generator().manual_seed(int(seed))
        self.groups.copy_(
            spherical_kmeans(cached, self.num_groups, self.kmeans_iters, generator=gen, chunk_bytes=self.kmeans_chunk_bytes)
        )
        self.groups_ready.fill_(True)

    @torch.no_grad()
    def health_assignments(self) -> Dict[str, Tuple[torch.Tensor, int]]:
        """The cached recent projections assigned to their closest group (none before the
        groups exist)."""
        if not bool(self.groups_ready) or int(self.cache_filled) == 0:
            return {}
        # Chunked as the re-grouping is: the whole cache x groups similarity can be gigabytes.
        cached = F.normalize(self.cache[: int(self.cache_filled)], dim=1)
        labels = nearest_centre(cached, F.normalize(self.groups, dim=1), self.kmeans_chunk_bytes)
        return {"smog_groups": (labels, self.num_groups)}

    @torch.no_grad()
    def push_cache(self, feats: torch.Tensor) -> None:
        """Write ``feats`` (M, D) unit rows into the ring cache."""
        size = self.cache.shape[0]
        feats = feats[-size:]
        rows = (self.cache_ptr + torch.arange(feats.shape[0], device=feats.device)) % size
        self.cache[rows] = feats.to(self.cache.dtype)
        self.cache_ptr.copy_((self.cache_ptr + feats.shape[0]) % size)
        self.cache_filled.copy_(torch.clamp(self.cache_filled + feats.shape[0], max=size))

    # ----------------------------------------------------------------------------- forward
    def online_features(self, images: torch.Tensor):
        """(N, 3, H, W) -> (f(x) for the loss, projection for the grouping), both (N, D) unit rows."""
        z = self.project(images)
        f = self.predictor(z) if self.predictor is not None else z
        return F.normalize(f, dim=1), F.normalize(z, dim=1)

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        views = self.preprocess_images(batched_inputs, "views")
        if len(views) < 2:
            raise ValueError(f"SMoG expects at least 2 views, got {len(views)}")
        a, b = (1, 0) if self._swap_views else (0, 1)
        online, projected = self.online_features(views[a])
        small = [self.online_features(v)[0] for v in views[2:]]
        with torch.no_grad():
            momentum = self.project(views[b], target=True)
            if "predictor" in self.target:
                momentum = self.target["predictor"](momentum)
            momentum = F.normalize(momentum, dim=1)
            # _init_groups is False after the first step: no device sync (graph break) later.
            if self._init_groups and not bool(self.groups_ready):
                first = concat_all_gather(projected.detach())
                gen = torch.Generator().manual_seed(0)
                self.groups.copy_(spherical_kmeans(first, self.num_groups, self.kmeans_iters, generator=gen))
                self.groups_ready.fill_(True)
            self._init_groups = False
            target_groups = assign_to_groups(momentum, self.groups)

        # Exact at any world size: the gather's backward sums every process's gradient of the
        # group features into the rows of the process that computed them.
        everyone = all_gather_with_grad(projected)
        assignment = assign_to_groups(everyone, self.groups)
        groups = momentum_group_update(self.groups, everyone, assignment, self.beta)
        loss = group_contrastive_loss(online, groups, target_groups, self.temperature).mean()
        for s in small:
            loss = loss + group_contrastive_loss(s, groups, target_groups, self.temperature).mean()
        loss = loss / (1 + len(small))

        with torch.no_grad():
            # Rebind, not copy_: the old tensor may be saved for the backward pass (torch.compile's
            # partitioner saves the buffer itself), and writing into it would break that pass.
            self.groups = groups.detach()
            self.push_cache(everyone.detach())
            used = (torch.bincount(assignment, minlength=self.num_groups) > 0).sum().float()
        return {"loss_smog": loss, "smog_groups_used": used}
