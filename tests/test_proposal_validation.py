"""Proposal files validated where they enter the store: every bad row of issue 24 ends in a
counted repair or a refusal naming the file, never in SoCo silently training on whole crops;
a fuzzer over random mixtures of the bad rows; the boxes that reach RoIAlign have positive size."""

import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from soco.data.method_data import build_mapper, prepare_dataset_dicts
from soco.data.proposals.validation import ProposalFileError, clean_proposals
from test_soco_model import tiny_cfg

H, W = 48, 64  # every test image
N = 8
GOOD = [[4.0, 4.0, 40.0, 30.0], [10.0, 8.0, 60.0, 44.0], [0.0, 0.0, 32.0, 24.0]]
BAD = {  # row of the issue -> one image's entry
    "nan": [[np.nan, 4, 40, 30]] * 3,
    "inf": [[4, 4, np.inf, 30], [-np.inf, 0, 10, 10]],
    "inverted": [[40, 30, 4, 4], [60, 8, 10, 44]],
    "far_outside": [[500, 500, 600, 600], [-300, -300, -200, -200]],
    "huge": [[-1e6, -1e6, 1e6, 1e6]] * 2,
    "empty": [[5, 5, 5, 20], [70, 0, 90, 10]],
    "score_column": np.array([[4, 4, 40, 30, 0.9]] * 8),
    "three_columns": np.array([[4, 4, 40]] * 8),
    "none": None,
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(N):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _dicts(root):
    return [{"file_name": str(root / f"{i}.png"), "image_id": f"{i}.png"} for i in range(N)]


def _write(path, entries, ids=None, sizes="full"):
    ids = ids or [f"{i}.png" for i in range(len(entries))]
    payload = {"ids": ids, "boxes": entries, "bbox_mode": 0}
    if isinstance(sizes, str):
        payload["image_sizes"] = np.array([[H, W]] * len(ids), np.int32)
    elif sizes is not None:
        payload["image_sizes"] = sizes
    path.write_bytes(pickle.dumps(payload))
    return str(path)


def _prepare(root, path, **soco):
    return prepare_dataset_dicts(tiny_cfg(PROPOSALS=path, **soco), _dicts(root))


def test_clean_proposals_counts_every_kind():
    ids = ["a", "b", "c", "d", "b"]
    entries = [
        [[1, 1, 10, 10], [np.nan, 0, 5, 5], [8, 8, 2, 2], [-2, -2, 20, 20], [-1e6, -1e6, 1e6, 1e6], [3, 3, 3, 9]],
        np.zeros((2, 5)),
        None,
        [[0, 0, 4, 4]],
        [[0, 0, 9, 9]],
    ]
    out_ids, boxes, sizes, report = clean_proposals("f.pkl", ids, entries, [[30, 30], [30, 30], [30, 30]])
    assert out_ids == ["a", "b", "c", "d"] and sizes[:, 0].tolist() == [30, 30, 30, 0]
    assert report.counts == {"duplicate_ids": 1, "wrong_shape": 2, "missing_sizes": 1, "non_finite": 1, "inverted": 1,
                             "outside": 1, "clipped": 1}
    assert report.examples["wrong_shape"] == ["b", "c"] and report.examples["duplicate_ids"] == ["b"]
    assert boxes[0].tolist() == [[1, 1, 10, 10], [0, 0, 20, 20], [3, 3, 3, 9]] and len(boxes[1]) == len(boxes[2]) == 0
    assert "f.pkl: 4 images, 7 boxes read" in report.summary() and "non finite: 1 (e.g. a)" in report.summary()
    with pytest.raises(ProposalFileError, match="f.pkl: 2 ids but 1 box entries"):
        clean_proposals("f.pkl", ["a", "b"], [[[0, 0, 1, 1]]])
    with pytest.raises(ProposalFileError, match="must be lists in the same order"):
        clean_proposals("f.pkl", ["a"], {"a": [[0, 0, 1, 1]]})


@pytest.mark.parametrize("row", sorted(BAD))
def test_a_file_of_bad_boxes_is_refused_naming_the_file_ids_and_counts(images, tmp_path, row):
    """Every image's boxes broken (NaN, inf, inverted, outside, +-1e6, empty, (N, 5), (N, 3),
    None): no box survives, and the file is refused before any model is built."""
    path = _write(tmp_path / f"{row}.pkl", [BAD[row]] * N)
    with pytest.raises(ProposalFileError, match=rf"{row}.pkl.*8 of the 8 training images \(100.0%\) have no usable box "
                                                r"\(e.g. 0.png, 1.png, 2.png\).*MAX_IMAGES_WITHOUT_BOXES=0.02"):
        _prepare(images, path)


def test_repairs_below_the_threshold_are_counted_in_the_log(images, tmp_path, caplog):
    entries = [GOOD] * N
    entries[2] = GOOD + [[-5, -5, 20, 20], [np.nan, 1, 2, 3]]  # one clipped, one dropped
    path = _write(tmp_path / "mixed.pkl", entries)
    with caplog.at_level(logging.WARNING, logger="soco.data.proposals.validation"):
        dataset = _prepare(images, path)
    assert "mixed.pkl: 8 images, 26 boxes read, 25 kept; non finite: 1 (e.g. 2.png); clipped: 1 (e.g. 2.png)" in caplog.text
    assert dataset[2]["proposal_boxes"].tolist()[-1] == [0, 0, 20, 20]
    # One image in eight without boxes passes a threshold of 0.2, and is counted.
    entries[5] = BAD["inverted"]
    path = _write(tmp_path / "one_empty.pkl", entries)
    with pytest.raises(ProposalFileError, match=r"1 of the 8 training images \(12.5%\).*\(e.g. 5.png\)"):
        _prepare(images, path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="soco.data.proposals.validation"):
        assert len(_prepare(images, path, MAX_IMAGES_WITHOUT_BOXES=0.2)) == N
    assert "inverted: 2 (e.g. 5.png)" in caplog.text and "1 training images left without a box" in caplog.text


def test_duplicate_ids_short_sizes_and_non_pickles_are_named(images, tmp_path, caplog):
    ids = [f"{i}.png" for i in range(N)] + ["3.png"]
    path = _write(tmp_path / "dup.pkl", [GOOD] * N + [[[0, 0, 9, 9]]], ids=ids, sizes=np.array([[H, W]] * 9))
    with caplog.at_level(logging.WARNING, logger="soco.data.proposals.validation"):
        dataset = _prepare(images, path)
    assert "duplicate ids: 1 (e.g. 3.png)" in caplog.text and dataset[3]["proposal_boxes"].tolist() == GOOD
    caplog.clear()
    path = _write(tmp_path / "short.pkl", [GOOD] * N, sizes=np.array([[H, W]] * 5))
    with caplog.at_level(logging.WARNING, logger="soco.data.proposals.validation"):
        dataset = _prepare(images, path)
    assert "missing sizes: 3 (e.g. 5.png, 6.png, 7.png)" in caplog.text and "proposal_image_size" not in dataset[6]
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ProposalFileError, match="list.pkl: not a Detectron2 proposal file.*found list"):
        _prepare(images, str(tmp_path / "list.pkl"))
    (tmp_path / "text.pkl").write_text("0.png 1 2 3 4\n")
    with pytest.raises(ProposalFileError, match="text.pkl: not a readable proposal file"):
        _prepare(images, str(tmp_path / "text.pkl"))
    path = _write(tmp_path / "dict.pkl", {f"{i}.png": GOOD for i in range(N)})
    with pytest.raises(ProposalFileError, match="dict.pkl: 'ids' and 'boxes' must be lists"):
        _prepare(images, path)


def _capture_roi_boxes(monkeypatch):
    """Every RoI box given to RoIAlign, as (K, 5) tensors (batch index, x1, y1, x2, y2)."""
    import sys

    import detectron2.layers  # noqa: F401  (its package name roi_align is the function, hence sys.modules)

    d2_roi_align = sys.modules["detectron2.layers.roi_align"]
    seen = []
    original = d2_roi_align.roi_align

    def spy(inputs, rois, *args, **kwargs):
        seen.append(rois.detach().clone())
        return original(inputs, rois, *args, **kwargs)

    monkeypatch.setattr(d2_roi_align, "roi_align", spy)
    return seen


@pytest.mark.parametrize("views", ["official", "paper"])
def test_inverted_boxes_never_reach_roialign(images, tmp_path, monkeypatch, views):
    """Inverted boxes in one image of eight (threshold raised): the run goes on with them dropped
    and counted; every RoI of a SoCo forward pass has positive width and height."""
    from soco.modeling.meta_arch.soco import SoCo

    entries = [GOOD] * N
    entries[1] = GOOD[:1] + BAD["inverted"]
    entries[4] = BAD["inverted"]
    path = _write(tmp_path / "inv.pkl", entries)
    cfg = tiny_cfg(PROPOSALS=path, VIEWS=views, MAX_IMAGES_WITHOUT_BOXES=0.2)
    dataset = prepare_dataset_dicts(cfg, _dicts(images))
    mapper = build_mapper(cfg)
    torch.manual_seed(0)
    batch = [mapper(dataset[i]) for i in range(N)]
    seen = _capture_roi_boxes(monkeypatch)
    model = SoCo(cfg)
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    rois = torch.cat(seen)
    assert len(rois) >= N * cfg.MODEL.SOCO.NUM_PROPOSALS * 2
    assert bool(((rois[:, 3] - rois[:, 1]) > 0).all() and ((rois[:, 4] - rois[:, 2]) > 0).all())


def test_fuzzed_proposal_files_end_in_a_clean_dataset_or_a_named_refusal(images, tmp_path):
    """Random mixtures of the bad rows: either ProposalFileError naming the file, or a dataset
    whose every image keeps >= 1 box of positive size inside the image, and views whose boxes
    (what reaches RoIAlign) all have positive size."""
    rng = np.random.default_rng(24)
    kinds = sorted(BAD)
    outcomes = {"refused": 0, "trained": 0}
    for trial in range(24):
        entries, ids = [], [f"{i}.png" for i in range(N)]
        for i in range(N):
            pick = rng.random()
            if pick < 0.5:
                boxes = list(GOOD)
                for _ in range(rng.integers(0, 3)):  # good boxes with a few bad ones mixed in
                    extra = BAD[kinds[rng.integers(len(kinds))]]
                    if isinstance(extra, list):
                        boxes += [extra[0]]
                entries.append(boxes)
            else:
                entries.append(BAD[kinds[rng.integers(len(kinds))]])
        if rng.random() < 0.3:  # a duplicate id
            ids.append(ids[rng.integers(N)])
            entries.append(GOOD[:1])
        sizes = np.array([[H, W]] * len(ids)) if rng.random() < 0.8 else np.array([[H, W]] * (len(ids) - 2))
        path = _write(tmp_path / f"fuzz{trial}.pkl", entries, ids=ids, sizes=sizes)
        views = "official" if trial % 2 else "paper"
        cfg = tiny_cfg(PROPOSALS=path, VIEWS=views, MAX_IMAGES_WITHOUT_BOXES=0.5)
        try:
            dataset = prepare_dataset_dicts(cfg, _dicts(images))
        except ProposalFileError as e:
            assert f"fuzz{trial}.pkl" in str(e) and "have no usable box" in str(e)
            outcomes["refused"] += 1
            continue
        outcomes["trained"] += 1
        mapper = build_mapper(cfg)
        for i in range(len(dataset)):
            boxes = np.asarray(dataset[i]["proposal_boxes"])
            if len(boxes):
                assert np.isfinite(boxes).all() and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
                assert (boxes >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
            out = mapper(dataset[i])
            for b in out["boxes"].values():
                assert bool(((b[:, 2] - b[:, 0]) > 0).all() and ((b[:, 3] - b[:, 1]) > 0).all()), (trial, i, views)
    assert outcomes["refused"] and outcomes["trained"], outcomes
