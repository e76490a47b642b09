"""The package's structure: data flows tool -> data -> engine -> modeling (no imports between
soco.data and soco.modeling), the engine gets each method's data from soco.data's registry,
models are built from explicit arguments (no cfg kept), the proposal reader stays light."""

import ast
import os
import subprocess
import sys

import pytest
import torch

from image_level_helpers import build_method, tiny_cfg
from soco.data.method_data import build_mapper, method_data, prepare_dataset_dicts, register_method_data
from soco.modeling.ema import MomentumSchedule, cosine_tau

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "soco")


def _soco_imports(folder):
    """(file, imported soco sub-package) for every import in ``soco/<folder>``, relative ones resolved."""
    found = []
    for root, _, files in os.walk(os.path.join(PACKAGE, folder)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            package = os.path.relpath(root, os.path.dirname(PACKAGE)).split(os.sep)
            for node in ast.walk(ast.parse(open(path).read(), path)):
                if isinstance(node, ast.ImportFrom):
                    base = package[: len(package) - node.level + 1] if node.level else []
                    module = ".".join(base + ([node.module] if node.module else []))
                    targets = [module] + [f"{module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    continue
                found += [(path, t.split(".")[1]) for t in targets if t.startswith("soco.") and "." in t]
    return found


@pytest.mark.parametrize("folder, forbidden", [("modeling", "data"), ("data", "modeling")])
def test_data_and_modeling_do_not_import_each_other(folder, forbidden):
    offenders = sorted({path for path, sub in _soco_imports(folder) if sub == forbidden})
    assert not offenders, f"soco/{folder} imports soco.{forbidden}: {offenders}"


def test_the_import_scan_sees_relative_imports():
    """The check above would catch a relative import: the engine's own ones are found."""
    subs = {sub for _, sub in _soco_imports("engine")}
    assert {"data", "modeling", "solver"} <= subs


def test_reading_proposals_does_not_import_the_generator():
    code = (
        "import sys; import soco.data.proposals as p; p.load_proposals; "
        "print(sorted(m for m in ('cv2', 'tqdm', 'multiprocessing', 'soco.data.proposals.runner', "
        "'soco.data.proposals.methods', 'soco.data.proposals.grouping') if m in sys.modules)); "
        "p.propose_file; print('soco.data.proposals.runner' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"


def test_method_data_registry():
    cfg = tiny_cfg("CoKe")
    dicts = [{"file_name": "a.png", "image_id": "a"}, {"file_name": "b.png", "image_id": "b"}]
    assert [d["instance_index"] for d in prepare_dataset_dicts(cfg, dicts)] == [0, 1]
    assert "instance_index" not in dicts[0]  # copies, the input is left alone
    cfg.MODEL.META_ARCHITECTURE = "CLSA"
    assert prepare_dataset_dicts(cfg, dicts) is dicts
    assert set(build_mapper(cfg).view_sets) == {"views", "strong_views"}
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    with pytest.raises(KeyError, match="MODEL.META_ARCHITECTURE='GeneralizedRCNN' has no data registered"):
        method_data(cfg)
    with pytest.raises(KeyError, match="already registered"):
        register_method_data("SoCo", lambda cfg: None)


def test_momentum_schedule():
    cosine = MomentumSchedule(0.99, 1.0)
    assert [cosine(k, 100) for k in (0, 37, 100)] == [cosine_tau(k, 100, 0.99, 1.0) for k in (0, 37, 100)]
    constant = MomentumSchedule(0.999, 1.0, constant=True)
    assert constant(0, 100) == constant(99, 100) == 0.999  # MOMENTUM_END is not read
    cfg = tiny_cfg("CLSA")
    cfg.MODEL.EMA.MOMENTUM, cfg.MODEL.EMA.MOMENTUM_END = 0.9, 0.95
    assert MomentumSchedule.from_config(cfg) == MomentumSchedule(0.9, 0.95, False)


@pytest.mark.parametrize("arch", ["BYOL", "CoKe", "CLSA", "SMoG"])
def test_models_are_built_from_explicit_arguments(arch):
    cfg = tiny_cfg(arch, num_images=24)
    model = build_method(cfg)
    assert not hasattr(model, "cfg")
    cfg.MODEL.EMA.MOMENTUM, cfg.MODEL.EMA.MOMENTUM_END = 0.5, 0.6  # read once, at construction
    assert model.target_momentum(0, 10) == pytest.approx(0.99)
    if arch == "CoKe":
        assert model.labels.shape[1] == 24 and model.iters_per_epoch == 24 // cfg.SOLVER.IMS_PER_BATCH


def test_coke_cluster_assignments_pick_the_closest_centre():
    """Centres set to the normalised projections of four images: each image is assigned its own."""
    cfg = tiny_cfg("CoKe", num_images=8)
    cfg.MODEL.COKE.NUM_CLUSTERS = [4, 6]
    model = build_method(cfg).eval()
    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = torch.nn.functional.normalize(model.project(model.normalize(images)), dim=1)
        model.loss_centers_0.copy_(z)
        model.loss_centers_1[:4].copy_(z.flip(0))
        model.loss_centers_1[4:].copy_(-z[:2])
    first, second = model.cluster_assignments(images)
    assert first.tolist() == [0, 1, 2, 3] and second.tolist() == [3, 2, 1, 0]
