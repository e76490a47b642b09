"""MLP projector / predictor heads: Linear - Norm - ReLU - ... - Linear (BYOL, SoCo, CLSA, SMoG)."""

from typing import List

from detectron2.config import CfgNode
from torch import nn

__all__ = ["MLPHead", "build_projector", "build_predictor"]


class MLPHead(nn.Sequential):
    """``num_layers`` linear layers; every hidden layer is followed by ``norm`` and ReLU.

    Input (N, in_dim) -> output (N, out_dim). ``norm``: "BN" (BatchNorm1d) or "" (none, as
    MoCo v2's head). With 2 layers and "BN": Linear(in, hidden) - BN - ReLU - Linear(hidden, out).
    Hidden linear layers keep their bias even before BN, as BYOL's reference does.
    ``output_bn`` adds a BatchNorm1d after the last linear layer (CoKe's and SMoG's projectors).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, norm: str = "BN",
                 output_bn: bool = False):
        if num_layers < 1:
            raise ValueError(f"MLPHead needs num_layers >= 1, got {num_layers}")
        if norm not in ("BN", ""):
            raise ValueError(f"MLPHead norm must be 'BN' or '', got {norm!r}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: List[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                if norm == "BN":
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.ReLU(inplace=True))
        if output_bn:
            layers.append(nn.BatchNorm1d(out_dim))
        super().__init__(*layers)
        self.out_dim = out_dim


def build_projector(cfg: CfgNode, in_dim: int, output_bn: bool = False) -> MLPHead:
    """Projector g from ``cfg.MODEL.PROJECTOR``: (N, in_dim) -> (N, PROJECTOR.OUT_DIM)."""
    c = cfg.MODEL.PROJECTOR
    return MLPHead(in_dim, c.HIDDEN_DIM, c.OUT_DIM, c.NUM_LAYERS, c.NORM, output_bn)


def build_predictor(cfg: CfgNode) -> MLPHead:
    """Predictor q from ``cfg.MODEL.PREDICTOR``: (N, PROJECTOR.OUT_DIM) -> same size."""
    c = cfg.MODEL.PREDICTOR
    dim = cfg.MODEL.PROJECTOR.OUT_DIM
    return MLPHead(dim, c.HIDDEN_DIM, dim, c.NUM_LAYERS, c.NORM)
