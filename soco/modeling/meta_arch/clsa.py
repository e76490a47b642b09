"""CLSA (Wang & Qi, TPAMI 2022): MoCo v2 plus the distributional divergence on strong views.

Query = online backbone -> 2-layer MLP (2048 -> 128, no BN, MoCo v2) on weak view 1; key =
momentum copy (``target.``, tau = MODEL.EMA.MOMENTUM, 0.999 constant) on weak view 2;
negatives = a FIFO queue of past keys. L = L_C + BETA * L_D with L_D summed over the strong
views (CLSA* has five), every distribution a softmax over [positive key, queue] at the same
temperature (eq. 3-7; DESIGN.md on the garbled indexing). With BETA = 0 this is MoCo v2.

Shuffle-BN (MoCo): under DDP the key batch is gathered, shuffled across processes, encoded
and un-shuffled, so the key encoder's BN statistics never come from the query's own images.
This needs per-process BN, as in MoCo v2 and CLSA: the CLSA configs set PRETRAIN.SYNC_BN False
(with SyncBN the key BN would see the whole global batch and the shuffle would do nothing;
it stays an option). The queue and the momentum encoder are global state: the queue is filled
from all-gathered keys and broadcast from rank 0 at the start, so it is identical everywhere.
With one process there is nothing to shuffle across: the key encoder's BN sees the whole local
batch, as in MoCo's single-GPU runs; no sub-batch emulation is done.
"""

from typing import Any, Dict, List

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm

from ..distributed import concat_all_gather
from ..ema import MomentumSchedule
from ..losses.clsa import contrast_logits, contrastive_loss, distributional_divergence_loss
from .base import ImageLevelMetaArch

__all__ = ["CLSA"]


@META_ARCH_REGISTRY.register()
class CLSA(ImageLevelMetaArch):
    """Online: backbone, projector; target: momentum backbone, projector. Buffers: ``queue``
    (QUEUE_SIZE, D) unit rows, ``queue_ptr`` (next row to overwrite)."""

    @configurable
    def __init__(self, *, queue_size: int, temperature: float = 0.2, beta: float = 1.0, shuffle_bn: bool = True,
                 **kwargs):
        """``queue_size``: negatives kept; ``temperature``, ``beta``, ``shuffle_bn`` as
        ``MODEL.CLSA``. Other arguments go to :class:`ImageLevelMetaArch` (with a target)."""
        super().__init__(with_target=True, **kwargs)
        self.temperature, self.beta, self.shuffle_bn = float(temperature), float(beta), bool(shuffle_bn)
        if queue_size <= 0:
            raise ValueError(f"MODEL.CLSA.QUEUE_SIZE must be > 0, got {queue_size}")
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, self.projector.out_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        """MoCo's key-encoder momentum is constant: MODEL.EMA.MOMENTUM (MOMENTUM_END unused)."""
        c = cfg.MODEL.CLSA
        return {
            **super().from_config(cfg, with_predictor=False),
            "ema": MomentumSchedule.from_config(cfg, constant=True),
            "queue_size": c.QUEUE_SIZE,
            "temperature": c.TEMPERATURE,
            "beta": c.BETA,
            "shuffle_bn": c.SHUFFLE_BN,
        }

    @torch.no_grad()
    def encode_keys(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, D) unit keys from the momentum encoder, with shuffle-BN under DDP."""
        world = comm.get_world_size()
        if not (self.shuffle_bn and world > 1):
            return F.normalize(self.project(images, target=True), dim=1)
        gathered = concat_all_gather(images)
        perm = torch.randperm(gathered.shape[0], device=images.device)
        dist.broadcast(perm, src=0)
        local = perm.view(world, -1)[comm.get_rank()]
        keys = F.normalize(self.project(gathered[local], target=True), dim=1)
        all_keys = concat_all_gather(keys)
        # all_keys[j] is the key of gathered[perm[j]]; undo the permutation, keep this rank's rows.
        unshuffled = torch.empty_like(all_keys)
        unshuffled[perm] = all_keys
        return unshuffled.view(world, -1, keys.shape[1])[comm.get_rank()]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the all-gathered ``keys`` (N, D) at ``queue_ptr`` (wrapping around), exactly as
        writing them one by one would: with N > QUEUE_SIZE only the last QUEUE_SIZE keys stay, at
        the rows they would have reached, and the pointer moves by N (any N, any queue size)."""
        keys = concat_all_gather(keys)
        size, total = self.queue.shape[0], keys.shape[0]
        kept = keys[-size:]
        start = self.queue_ptr + (total - kept.shape[0])
        rows = (start + torch.arange(kept.shape[0], device=keys.device)) % size
        # Under AMP the keys are float16 / bfloat16; the queue stays float32.
        self.queue[rows] = kept.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + total) % size)

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        weak = self.preprocess_images(batched_inputs, "views")
        if len(weak) != 2:
            raise ValueError(f"CLSA expects 2 weak views (query, key), got {len(weak)}")
        query = self.project(weak[0])
        keys = self.encode_keys(weak[1])
        queue = self.queue.clone().detach()
        weak_logits = contrast_logits(query, keys, queue, self.temperature)
        # Logged metric as a tensor: the trainer reads it at LOG_PERIOD (no per-step sync).
        with torch.no_grad():
            positive_prob = F.softmax(weak_logits.float(), dim=1)[:, 0].mean()
        losses = {"loss_contrast": contrastive_loss(weak_logits).mean(), "clsa_positive_prob": positive_prob}
        if self.beta > 0:
            strong = self.preprocess_images(batched_inputs, "strong_views")
            divergence = sum(
                distributional_divergence_loss(weak_logits, contrast_logits(self.project(s), keys, queue, self.temperature)).mean()
                for s in strong
            )
            losses["loss_divergence"] = self.beta * divergence
        self.enqueue(keys)
        return losses
