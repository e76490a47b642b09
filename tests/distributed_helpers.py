"""Multi-process runs for tests/test_distributed.py (not a test module).

Every method is trained for a few steps through the project's own ``build_pretrain_trainer``
on a tiny image folder, once in 2 gloo processes (``soco.engine.launch``) with batch B each and
once in the test process with batch 2B. Spawned functions must live in an importable module.
"""

import os
import shutil
from typing import Dict, List

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from PIL import Image

import soco.modeling.meta_arch  # noqa: F401  (registers the methods)
from soco.config import get_pretrain_cfg
from soco.engine import build_pretrain_trainer, unwrap_model
from soco.modeling.distributed import GlobalStateMismatch, check_global_state, global_state_tensors, tensor_fingerprint

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
GLOBAL_BATCH = 4
STEPS = 3  # compared with world size 1 (BN frozen)
REAL_STEPS = 2  # with per-process BN, the state checked every step
NUM_IMAGES = 8  # 2 iterations per epoch: CoKe's epoch end and SMoG's re-grouping happen

# Per method: demo config (the method's real settings, CPU-sized) and what shrinks it further.
METHODS: Dict[str, list] = {
    "SoCo": ["SoCo/SoCo_demo_R18_FPN_cpu.yaml", [
        "MODEL.FPN.OUT_CHANNELS", 16, "MODEL.ROI_BOX_HEAD.CONV_DIM", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
        "MODEL.SOCO.VIEW1_SIZE", 48, "MODEL.SOCO.VIEW2_SIZE", 48, "MODEL.SOCO.VIEW3_SIZE", 32,
        "MODEL.SOCO.NUM_PROPOSALS", 2, "MODEL.SOCO.LEVEL_THRESHOLDS", (12, 24, 48)]],
    "BYOL": ["BYOL/byol_R18_cpu_demo.yaml", ["MODEL.BYOL.CROP_SIZE", 32]],
    "CoKe": ["CoKe/coke_R18_cpu_demo.yaml", [
        "MODEL.COKE.NUM_CLUSTERS", [4, 6], "MODEL.COKE.INIT_EPOCHS", 0, "MODEL.COKE.CROP_SIZE", 32]],
    "CLSA": ["CLSA/clsa_R18_cpu_demo.yaml", [
        "MODEL.CLSA.QUEUE_SIZE", 16, "MODEL.CLSA.CROP_SIZE", 32, "MODEL.CLSA.STRONG_CROP_SIZES", [16],
        "MODEL.CLSA.STRONG_CROP_MIN_SCALES", [0.1], "MODEL.CLSA.STRONG_CROP_MAX_SCALES", [0.5]]],
    "SMoG": ["SMoG/smog_R18_cpu_demo.yaml", [
        "MODEL.SMOG.NUM_GROUPS", 4, "MODEL.SMOG.RESET_PERIOD", 2, "MODEL.SMOG.CROP_SIZE", 32,
        "MODEL.SMOG.NUM_SMALL_CROPS", 0]],
}


def make_image_folder(root: str) -> None:
    """NUM_IMAGES smooth random PNGs of 40-54 px and SoCo proposals for them (props.pkl)."""
    from soco.data.proposals import save_proposals

    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    ids, boxes = [], []
    for i in range(NUM_IMAGES):
        size = (40 + 2 * i, 54 - 2 * i)
        small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.BILINEAR).save(os.path.join(root, "images", f"{i}.png"))
        w, h = size
        ids.append(f"{i}.png")
        boxes.append(np.array([[0, 0, w * 0.6, h * 0.6], [w * 0.3, h * 0.3, w, h], [w * 0.1, h * 0.2, w * 0.8, h * 0.9]],
                              dtype=np.float32))
    save_proposals(os.path.join(root, "props.pkl"), ids, boxes)


def method_cfg(method: str, root: str, output_dir: str, *extra):
    """The method's demo config, shrunk, on the image folder of ``make_image_folder``."""
    name, overrides = METHODS[method]
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, name))
    cfg.merge_from_list(list(overrides) + [
        "MODEL.DEVICE", "cpu", "MODEL.PROJECTOR.HIDDEN_DIM", 32, "MODEL.PROJECTOR.OUT_DIM", 16,
        "MODEL.PREDICTOR.HIDDEN_DIM", 32, "PRETRAIN.IMAGE_ROOT", os.path.join(root, "images"),
        "DATASETS.TRAIN", "()", "SOLVER.IMS_PER_BATCH", GLOBAL_BATCH, "SOLVER.MAX_ITER", STEPS,
        "PRETRAIN.WARMUP_EPOCHS", 0, "SOLVER.CHECKPOINT_PERIOD", 1000, "PRETRAIN.LOG_PERIOD", 1,
        "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", output_dir, "SEED", 5,
        "PRETRAIN.STATE_CHECK_PERIOD", 1,
    ] + list(extra))
    os.makedirs(output_dir, exist_ok=True)
    if method == "SoCo":
        cfg.MODEL.SOCO.PROPOSALS = os.path.join(root, "props.pkl")
    cfg.freeze()
    return cfg


def freeze_batch_norm_statistics(model: torch.nn.Module) -> None:
    """BN layers in eval mode (normalising by their running statistics): the CPU stand-in that
    makes 2 processes x B compute exactly what 1 process x 2B does (per-process BN differs by
    design, and PyTorch's SyncBatchNorm needs GPUs)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


class _LossRecorder(HookBase):
    """Puts every step's ``loss_*`` values (this process's, not reduced) into ``record``."""

    def __init__(self, record: dict):
        self.record = record

    def after_step(self):
        metrics = self.trainer.last_metrics
        self.record["loss"][self.trainer.iter] = {k: float(v) for k, v in metrics.items() if k.startswith("loss_")}


def train_and_record(cfg, frozen_bn: bool, resume: bool = False) -> dict:
    """Train ``cfg`` with the project's trainer; record per-step losses, the first step's
    gradients, the final weights and fingerprints of the global state."""
    # As default_setup: seed + rank (rank 1's own draws are replaced by rank 0's broadcast).
    seed_all_rng(cfg.SEED + comm.get_rank())
    trainer, start_iter, cfg = build_pretrain_trainer(cfg, resume=resume)
    model = unwrap_model(trainer.model)
    if frozen_bn:
        freeze_batch_norm_statistics(model)
    record = {"loss": {}, "grad": None}

    def grab_grads(optimizer, args, kwargs):
        if record["grad"] is None:
            record["grad"] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    trainer.optimizer.register_step_pre_hook(grab_grads)

    trainer.register_hooks([_LossRecorder(record)])
    trainer.train(start_iter, cfg.SOLVER.MAX_ITER)
    state = global_state_tensors(model)
    record["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    record["fingerprints"] = {k: int(tensor_fingerprint(v)) for k, v in state.items()}
    return record


def _save(out_dir: str, name: str, obj) -> None:
    torch.save(obj, os.path.join(out_dir, f"{name}.rank{comm.get_rank()}.pt"))


def _catch(fn):
    try:
        fn()
        return None
    except Exception as e:  # recorded for the test process to assert on
        return f"{type(e).__name__}: {e}"


def worker(root: str, out_dir: str, methods: List[str]) -> None:
    """Run in each of the 2 processes: every method frozen-BN (compared with 1 x 2B by the
    test) and with its real config (global state compared across ranks), the state check
    against a perturbed buffer, and resume with a shared and with a per-rank OUTPUT_DIR."""
    rank = comm.get_rank()
    for method in methods:
        run_dir = os.path.join(out_dir, f"{method}_frozen")
        # CoKe's run also leaves a checkpoint after step 1 (resumed at world size 1 by the test).
        cfg = method_cfg(method, root, run_dir, "PRETRAIN.STATE_CHECK_PERIOD", 0,
                         "SOLVER.CHECKPOINT_PERIOD", 2 if method == "CoKe" else 1000)
        _save(out_dir, f"{method}_frozen", train_and_record(cfg, frozen_bn=True))
        run_dir = os.path.join(out_dir, f"{method}_real")
        cfg = method_cfg(method, root, run_dir, "SOLVER.MAX_ITER", REAL_STEPS)
        _save(out_dir, f"{method}_real", train_and_record(cfg, frozen_bn=False))

    # The cross-rank check names a buffer that one rank changed.
    trainer, _, _ = build_pretrain_trainer(method_cfg("CoKe", root, os.path.join(out_dir, "check")))
    model = unwrap_model(trainer.model)
    check_global_state(model, 0)  # equal after building (broadcast)
    if rank == 1:
        model.centers_1[0, 0] += 1e-6
    err = _catch(lambda: check_global_state(model, 7))
    _save(out_dir, "state_check", {"error": err, "type_ok": err is not None and err.startswith(GlobalStateMismatch.__name__)})

    # Resume at world size 2 (CoKe: the most state) from a shared folder: iterations 2-3 of a
    # 4-iteration run, from the checkpoint after iteration 1.
    straight_dir, resumed_dir = os.path.join(out_dir, "resume_a"), os.path.join(out_dir, "resume_b")
    extra = ["SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2]
    straight = train_and_record(method_cfg("CoKe", root, straight_dir, *extra), frozen_bn=False)
    if rank == 0:
        os.makedirs(resumed_dir, exist_ok=True)
        shutil.copy(os.path.join(straight_dir, "model_0000001.pth"), resumed_dir)
        with open(os.path.join(resumed_dir, "last_checkpoint"), "w") as f:
            f.write("model_0000001.pth")
    comm.synchronize()
    resumed = train_and_record(method_cfg("CoKe", root, resumed_dir, *extra), frozen_bn=False, resume=True)
    _save(out_dir, "resume", {"straight": straight, "resumed": resumed})

    # OUTPUT_DIR not shared: rank 0 finds the checkpoint, rank 1 an empty folder.
    own_dir = resumed_dir if rank == 0 else os.path.join(out_dir, "rank1_only")
    err = _catch(lambda: build_pretrain_trainer(method_cfg("CoKe", root, own_dir, *extra), resume=True))
    _save(out_dir, "unshared", {"error": err})
