"""The fast CPU and the batched device photometric paths against the reference v2 pipeline.

Equivalence is checked at three levels: the random draws (same calls, same order, so the same
seed gives the same flips and factors), each operation alone on fixed images and parameters
(exact where torchvision's arithmetic is reproduced exactly, within one level where float
summation order differs), and whole views over many seeds (per pixel and in distribution).
"""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from soco.data.transforms.augment import ViewAugmentation
from soco.data.transforms.byol import byol_spec
from soco.data.transforms.device import apply_deferred_photometric
from soco.data.transforms.mocov2 import mocov2_spec
from soco.data.transforms.photometric import NUM_PARAMS, PARAM_NAMES, identity_params, sample_photometric_params
from soco.data.transforms.photometric_batch import apply_photometric_batch
from soco.data.transforms.photometric_cpu import apply_photometric_chw
from soco.data.transforms.photometric_reference import GaussianBlurCV2, build_reference_transform

COL = {name: i for i, name in enumerate(PARAM_NAMES)}
SPECS = {"byol_T": byol_spec(0, 64), "byol_T'": byol_spec(1, 64), "mocov2": mocov2_spec(64)}


@pytest.fixture(scope="module")
def photos():
    """Six 64x64 crops of real photos (skimage), uint8 (3, 64, 64)."""
    import skimage.data

    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        image = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, name)())).permute(2, 0, 1)
        for top in (0, 100):
            out.append(F.resized_crop(image, top, top, 200, 240, [64, 64], antialias=True))
    return out


def _params(**values):
    p = identity_params()
    for name, value in values.items():
        p[COL[name]] = value
    return p


def _jitter_only(op: int, factor: float):
    name = ("brightness", "contrast", "saturation", "hue")[op]
    p = _params(jitter=1.0, **{name: factor})
    p[COL["order0"] : COL["order0"] + 4] = torch.tensor([op] + [o for o in range(4) if o != op], dtype=torch.float32)
    return p


def _max_diff(a, b):
    return int((a.int() - b.int()).abs().max())


# --- draws ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_sampling_makes_the_reference_pipelines_draws(photos, name):
    """Same seed -> the same number of draws as the v2 pipeline, and the same flip."""
    spec = SPECS[name]
    reference = build_reference_transform(spec)
    image = photos[0]
    for seed in range(40):
        torch.manual_seed(seed)
        ref = reference(image)
        after_reference = torch.rand(3)
        torch.manual_seed(seed)
        params = sample_photometric_params(spec)
        assert torch.equal(torch.rand(3), after_reference), seed
        # A flipped reference view is closer to the flipped fast view than to the unflipped one.
        fast = apply_photometric_chw(F.horizontal_flip(image) if params[COL["flip"]] else image, params)
        assert _max_diff(fast, ref) <= 3, seed


def test_parameters_follow_the_spec_distribution():
    spec = byol_spec(1, 64)
    torch.manual_seed(0)
    p = torch.stack([sample_photometric_params(spec) for _ in range(3000)])
    jitter = p[:, COL["jitter"]] > 0
    assert abs(jitter.float().mean() - 0.8) < 0.03
    assert abs(p[:, COL["flip"]].mean() - 0.5) < 0.03 and abs(p[:, COL["grayscale"]].mean() - 0.2) < 0.03
    assert abs((p[:, COL["blur_sigma"]] > 0).float().mean() - 0.1) < 0.02
    assert abs((p[:, COL["solarize_threshold"]] == 128).float().mean() - 0.2) < 0.03
    b = p[jitter, COL["brightness"]]
    assert b.min() >= 0.6 and b.max() <= 1.4 and abs(b.mean() - 1.0) < 0.02
    s = p[jitter, COL["saturation"]]
    assert s.min() >= 0.8 and s.max() <= 1.2
    h = p[jitter, COL["hue"]]
    assert h.min() >= -0.1 and h.max() <= 0.1
    sigma = p[p[:, COL["blur_sigma"]] > 0, COL["blur_sigma"]]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    orders = p[jitter][:, COL["order0"] : COL["order0"] + 4]
    assert (orders.sort(dim=1).values == torch.arange(4.0)).all()  # permutations
    assert abs((orders[:, 0] == 3).float().mean() - 0.25) < 0.04  # hue first a quarter of the time
    assert (p[~jitter][:, COL["brightness"]] == 1).all()


# --- one operation at a time ------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, factor, fn, fast_tolerance",
    [
        (0, 1.37, F.adjust_brightness, 0),
        (0, 0.61, F.adjust_brightness, 0),
        (1, 1.33, F.adjust_contrast, 0),
        (1, 0.64, F.adjust_contrast, 0),
        (2, 1.18, F.adjust_saturation, 0),
        (2, 0.83, F.adjust_saturation, 0),
        (3, 0.093, F.adjust_hue, 1),
        (3, -0.071, F.adjust_hue, 1),
    ],
)
def test_each_jitter_operation_matches_torchvision(photos, op, factor, fn, fast_tolerance):
    """The fast CPU kernels reproduce torchvision's uint8 brightness, contrast and saturation
    exactly and its hue (different HSV code) within a level; the batched torch kernels (no fused
    multiply-add emulation) within a level, on a small fraction of the values."""
    factor = float(torch.tensor(factor))  # ColorJitter's factors are float32 draws
    p = _jitter_only(op, factor)
    for image in photos:
        ref = fn(image, factor)
        fast = apply_photometric_chw(image, p)
        batched = apply_photometric_batch(image[None], p[None])[0]
        assert _max_diff(fast, ref) <= fast_tolerance and _max_diff(batched, ref) <= 1
        assert (fast != ref).float().mean() < 0.01 and (batched != ref).float().mean() < 0.01


def test_grayscale_and_solarize_are_exact(photos):
    gray, solar = _params(grayscale=1.0), _params(solarize_threshold=128.0)
    for image in photos:
        ref_gray = F.rgb_to_grayscale(image, num_output_channels=3)
        ref_solar = F.solarize(image, 128)
        assert torch.equal(apply_photometric_chw(image, gray), ref_gray)
        assert torch.equal(apply_photometric_batch(image[None], gray[None])[0], ref_gray)
        assert torch.equal(apply_photometric_chw(image, solar), ref_solar)
        assert torch.equal(apply_photometric_batch(image[None], solar[None])[0], ref_solar)
    assert torch.equal(apply_photometric_chw(photos[0], identity_params()), photos[0])
    assert torch.equal(apply_photometric_batch(photos[0][None], identity_params()[None])[0], photos[0])


@pytest.mark.parametrize("sigma", [0.1, 0.7, 1.9])
def test_blur_matches_both_reference_kernels(photos, sigma):
    p = _params(blur_sigma=sigma, blur_kernel=11.0)
    for image in photos:
        fast = apply_photometric_chw(image, p)
        batched = apply_photometric_batch(image[None], p[None])[0]
        torchvision_ref = F.gaussian_blur(image, [11, 11], [sigma, sigma])
        opencv_ref = GaussianBlurCV2(11).transform(image, {"sigma": sigma})
        assert _max_diff(fast, torchvision_ref) <= 1 and _max_diff(batched, torchvision_ref) <= 1
        assert _max_diff(fast, opencv_ref) <= 1


def test_flip_moves_boxes_exactly_as_the_reference(photos):
    """Geometry: the fast path flips image and boxes where the reference does, identically."""
    image = photos[1]
    box = tv_tensors.BoundingBoxes([[3.0, 5.0, 20.0, 30.0]], format="XYXY", canvas_size=(64, 64))
    spec = byol_spec(0, 64)
    fast, reference = ViewAugmentation(spec), ViewAugmentation(spec, impl="reference")
    for seed in range(20):
        torch.manual_seed(seed)
        _, ref_box = reference(image, box)
        torch.manual_seed(seed)
        _, fast_box = fast(image, box)
        assert torch.equal(ref_box, fast_box)


# --- whole views ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_views_match_the_reference_per_pixel_and_in_distribution(photos, name):
    spec = SPECS[name]
    fast, reference = ViewAugmentation(spec), ViewAugmentation(spec, impl="reference")
    deferred = ViewAugmentation(spec, defer=True)
    ref_means, fast_means, differing = [], [], []
    geometric, params = [], []
    for seed in range(120):
        image = photos[seed % len(photos)]
        torch.manual_seed(seed)
        ref = reference(image)
        torch.manual_seed(seed)
        out = fast(image)
        torch.manual_seed(seed)
        view, _, p = deferred.apply(image)
        geometric.append(view)
        params.append(p)
        assert _max_diff(out, ref) <= 3, seed
        differing.append((out != ref).float().mean())
        ref_means.append(ref.float().mean(dim=(1, 2)))
        fast_means.append(out.float().mean(dim=(1, 2)))
    batched = apply_photometric_batch(torch.stack(geometric), torch.stack(params))
    fast_all = []
    for seed in range(120):
        torch.manual_seed(seed)
        fast_all.append(fast(photos[seed % len(photos)]))
    # The device path differs from the fast CPU path by float rounding only: a level here and there.
    assert _max_diff(batched, torch.stack(fast_all)) <= 3
    assert (batched != torch.stack(fast_all)).float().mean() < 1e-3
    # Few pixels differ at all, and the channel means agree to a tenth of a level on average.
    assert float(torch.stack(differing).mean()) < 0.08
    assert (torch.stack(ref_means) - torch.stack(fast_means)).mean(0).abs().max() < 0.1
    assert (torch.stack(ref_means) - torch.stack(fast_means)).abs().max() < 1.0


def test_batch_rows_are_independent(photos):
    """Each image gets its own parameters in a mixed batch (different orders, ops and blurs)."""
    torch.manual_seed(3)
    spec = byol_spec(1, 64)
    params = torch.stack([sample_photometric_params(spec) for _ in photos])
    params[0, COL["blur_sigma"]] = 1.3  # at least one blurred and one solarised row
    params[1, COL["solarize_threshold"]] = 128.0
    batch = apply_photometric_batch(torch.stack(photos), params)
    for image, p, out in zip(photos, params, batch):
        assert _max_diff(out, apply_photometric_chw(image, p)) <= 2


def test_bad_inputs_fail_clearly(photos):
    with pytest.raises(ValueError, match="uint8"):
        apply_photometric_batch(torch.stack(photos).float(), identity_params()[None].expand(len(photos), -1))
    with pytest.raises(ValueError, match="params of shape"):
        apply_photometric_batch(torch.stack(photos), identity_params()[None])
    mixed = identity_params()[None].repeat(2, 1)
    mixed[:, COL["blur_sigma"]] = 1.0
    mixed[1, COL["blur_kernel"]] = 5.0
    with pytest.raises(ValueError, match="blur kernel"):
        apply_photometric_batch(torch.stack(photos[:2]), mixed)


# --- mappers and the device step --------------------------------------------------------------


def _soco_dicts(tmp_path, photos):
    from PIL import Image

    dicts = []
    for i, image in enumerate(photos[:4]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(F.resize(image, [80, 100]).permute(1, 2, 0).numpy()).save(path, quality=95)
        boxes = np.array([[5, 5, 50, 40], [30, 20, 90, 70], [0, 0, 40, 80]], np.float32)
        dicts.append({"file_name": str(path), "image_id": str(i), "proposal_boxes": boxes})
    return dicts


def _map_all(mapper, dicts):
    out = []
    for i, d in enumerate(dicts):
        torch.manual_seed(100 + i)
        out.append(mapper(d))
    return out


def test_soco_mapper_paths_agree_and_keep_geometry(tmp_path, photos):
    from soco.data.soco_mapper import SoCoMapper
    from soco.data.soco_views import SoCoViewParams

    params = SoCoViewParams(view1_size=64, view2_size=64, view3_size=32, view4_size=48, num_proposals=3)
    dicts = _soco_dicts(tmp_path, photos)
    reference = _map_all(SoCoMapper(params, "reference"), dicts)
    fast = _map_all(SoCoMapper(params), dicts)
    deferred = _map_all(SoCoMapper(params, augment_on="device"), dicts)
    assert deferred[0]["photometric"]["views"].shape == (4, NUM_PARAMS)
    device = apply_deferred_photometric(deferred, "cpu")
    assert "photometric" not in device[0]
    for r, f, d in zip(reference, fast, device):
        assert r["boxes"].keys() == f["boxes"].keys() == d["boxes"].keys()
        for name in r["boxes"]:  # geometry exactly as today
            assert torch.equal(r["boxes"][name], f["boxes"][name]) and torch.equal(r["boxes"][name], d["boxes"][name])
        for rv, fv, dv in zip(r["views"], f["views"], d["views"]):
            assert rv.shape == fv.shape == dv.shape and dv.dtype == torch.uint8
            assert _max_diff(rv, fv) <= 3 and _max_diff(fv, dv) <= 2


def test_image_level_mappers_defer_what_can_run_on_the_device(tmp_path, photos):
    from soco.config import get_pretrain_cfg
    from soco.data.method_data import build_mapper

    dicts = _soco_dicts(tmp_path, photos)
    for method, keys in (("BYOL", ["views"]), ("CLSA", ["views", "strong_views"])):
        cfg = get_pretrain_cfg()
        cfg.merge_from_list(["MODEL.BYOL.CROP_SIZE", 32, "MODEL.META_ARCHITECTURE", method])
        fast_mapper, device_mapper = build_mapper(cfg), build_mapper(cfg)
        device_mapper.configure_augmentation("fast", "device")
        fast, deferred = _map_all(fast_mapper, dicts), _map_all(device_mapper, dicts)
        assert list(deferred[0]["photometric"]) == ["views"]  # CLSA's strong views stay on the CPU
        device = apply_deferred_photometric(deferred, torch.device("cpu"))
        for f, d in zip(fast, device):
            for key in keys:
                assert len(f[key]) == len(d[key])
                for fv, dv in zip(f[key], d[key]):
                    assert _max_diff(fv, dv) <= (2 if key == "views" else 0)
        reference_mapper = build_mapper(cfg)
        reference_mapper.configure_augmentation("reference", "cpu")
        for f, r in zip(fast, _map_all(reference_mapper, dicts)):
            assert all(_max_diff(fv, rv) <= 3 for fv, rv in zip(f["views"], r["views"]))


def test_cpu_batches_pass_through_untouched():
    batch = [{"views": [torch.zeros(3, 4, 4, dtype=torch.uint8)], "image_id": "a"}]
    assert apply_deferred_photometric(batch, "cpu") is batch
    assert apply_deferred_photometric([], "cpu") == []


def test_device_path_resumes_exactly(tmp_path):
    """AUGMENT_ON=device: parameters come from the per-sample seeds, so a resumed run reproduces
    the uninterrupted run's losses bit for bit; and they stay close to the CPU path's losses."""
    import os
    import shutil

    from test_engine import raw_losses, tiny_byol_cfg

    from soco.engine import run_pretraining

    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).resize((48, 40), Image.BILINEAR).save(
            root / f"{i}.jpg", quality=95
        )
    opts = {"PRETRAIN.AUGMENT_ON": "device", "SOLVER.MAX_ITER": 3, "SOLVER.CHECKPOINT_PERIOD": 1}
    torch.manual_seed(0)  # the same initial weights for runs a and c
    run_a = run_pretraining(tiny_byol_cfg(str(root), tmp_path / "a", **opts))
    losses_a = raw_losses(run_a)
    (tmp_path / "b").mkdir()
    shutil.copy(os.path.join(tmp_path / "a", "model_0000000.pth"), tmp_path / "b")
    (tmp_path / "b" / "last_checkpoint").write_text("model_0000000.pth")
    losses_b = raw_losses(run_pretraining(tiny_byol_cfg(str(root), tmp_path / "b", **opts), resume=True))
    # 0 comes back from the checkpoint (smoothed metrics continue), 1 and 2 are recomputed.
    assert losses_b == losses_a
    torch.manual_seed(0)
    cpu = raw_losses(run_pretraining(tiny_byol_cfg(str(root), tmp_path / "c", **dict(opts, **{"PRETRAIN.AUGMENT_ON": "cpu"}))))
    # Same weights, views equal but for a level on a few pixels: the first losses agree closely
    # (later ones drift apart through the demo's large learning rate).
    assert abs(cpu[0] - losses_a[0]) < 0.005 * abs(cpu[0]), (cpu, losses_a)


def test_the_pretraining_loader_sets_the_path_from_the_config(tmp_path, photos):
    from soco.config import get_pretrain_cfg
    from soco.data.build import build_pretrain_loader
    from soco.data.soco_mapper import SoCoMapper
    from soco.data.soco_views import SoCoViewParams

    dicts = _soco_dicts(tmp_path, photos)
    params = SoCoViewParams(view1_size=48, view2_size=48, view3_size=24)
    cfg = get_pretrain_cfg()
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0, "PRETRAIN.AUGMENT_ON", "device"])
    batch = next(iter(build_pretrain_loader(cfg, dicts, SoCoMapper(params), seed=0)))
    assert [tuple(d["photometric"]["views"].shape) for d in batch] == [(3, NUM_PARAMS)] * 2
    cfg.merge_from_list(["PRETRAIN.AUGMENT_ON", "cpu"])
    assert "photometric" not in next(iter(build_pretrain_loader(cfg, dicts, SoCoMapper(params), seed=0)))[0]


def test_bench_loader_runs_on_any_folder(tmp_path, photos):
    """benchmarks/bench_loader.py on a two-image folder: every path timed, ratios and JSON written."""
    import json

    from conftest import load_tool
    from PIL import Image

    for i, image in enumerate(photos[:2]):
        Image.fromarray(F.resize(image, [60, 80]).permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.jpg")
    bench = load_tool("bench_loader", "benchmarks")
    out = tmp_path / "loader.json"
    import cv2

    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        bench.main(["--images", str(tmp_path), "--methods", "SoCo", "CLSA", "--repeats", "1", "--batch", "2",
                    "--workers", "0", "--loader-batches", "1", "--json", str(out)])  # fmt: skip
    finally:  # the benchmark pins both to one thread
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    result = json.loads(out.read_text())
    assert result["num_images"] == 2 and set(result["methods"]) == {"SoCo", "CLSA"}
    for row in result["methods"].values():
        assert all(row[p] > 0 for p in ("today", "fast", "device", "device_ms"))
        assert row["speedup_fast"] == pytest.approx(row["today"] / row["fast"])
        assert set(row["loader_img_per_s"]["0"]) == {"today", "fast", "device"}
