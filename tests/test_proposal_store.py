"""The memory-mapped proposal store: round trips against the pickle, determinism, and the
structural errors that name the file."""
import pickle
import subprocess
import sys

import numpy as np
import pytest

from soco.data.proposals.file_format import (load_proposals, open_proposals, read_proposal_file, save_proposals,
                                             store_path_for)
from soco.data.proposals.store import ProposalStore, StoreError, part_from_boxes, pixel_boxes, write_store

IDS = ["n01/a.JPEG", "n01/b.JPEG", "n02/c.JPEG"]
BOXES = [np.array([[0, 0, 10, 10], [1, 2, 30, 40]], np.float32), np.zeros((0, 4), np.float32),
         np.array([[5, 5, 50, 60]], np.float32)]
SIZES = [(40, 30), (10, 10), (70, 90)]
FAILURES = [("n03/bad.JPEG", "not a recognised image format")]


def _write_both(tmp_path):
    pkl, store = str(tmp_path / "p.pkl"), str(tmp_path / "p.store")
    save_proposals(pkl, IDS, BOXES, SIZES, FAILURES)
    save_proposals(store, IDS, BOXES, SIZES, FAILURES)
    return pkl, store


def test_store_round_trip_against_the_pickle(tmp_path):
    pkl, path = _write_both(tmp_path)
    from_pickle, from_store = read_proposal_file(pkl), read_proposal_file(path)
    assert list(from_store.boxes) == list(from_pickle.boxes) == IDS
    for i in IDS:
        np.testing.assert_array_equal(from_store.boxes[i], from_pickle.boxes[i])
        assert from_store.boxes[i].dtype == np.float32
    assert from_store.sizes == from_pickle.sizes == dict(zip(IDS, SIZES))
    assert from_store.failed == from_pickle.failed == dict(FAILURES)
    store = ProposalStore(path)
    assert len(store) == 3 and store.index("n01/b.JPEG") == 1 and store.index("n00/x.JPEG") == -1
    assert store.index("n02/c.JPEG") == 2 and store.id(2) == "n02/c.JPEG" and store.size(2) == (70, 90)
    assert store.section("boxes").dtype == np.uint16


def test_conversions_both_ways_keep_everything(tmp_path):
    pkl, path = _write_both(tmp_path)
    converted = open_proposals(pkl)  # the training reader converts a pickle once, next to it
    assert converted.path == store_path_for(pkl) and open(converted.path, "rb").read() == open(path, "rb").read()
    back = str(tmp_path / "back.pkl")
    subprocess.run([sys.executable, "tools/convert_proposals.py", path, back], check=True, capture_output=True)
    original, returned = read_proposal_file(pkl), read_proposal_file(back)
    assert list(returned.boxes) == IDS and returned.sizes == original.sizes and returned.failed == original.failed
    for i in IDS:
        np.testing.assert_array_equal(returned.boxes[i], original.boxes[i])
    again = str(tmp_path / "again.store")
    subprocess.run([sys.executable, "tools/convert_proposals.py", back, again], check=True, capture_output=True)
    assert open(again, "rb").read() == open(path, "rb").read()


def test_pickle_reading_warns_once_that_it_must_be_trusted(tmp_path, caplog):
    pkl, _ = _write_both(tmp_path)
    with caplog.at_level("WARNING"):
        read_proposal_file(pkl)
        read_proposal_file(pkl)
    assert sum("trusted source" in r.getMessage() for r in caplog.records) == 1


def test_store_is_deterministic_and_independent_of_parts(tmp_path):
    one, two = str(tmp_path / "one.store"), str(tmp_path / "two.store")
    write_store(one, [part_from_boxes(IDS, BOXES, SIZES, FAILURES)])
    write_store(two, [part_from_boxes(IDS[:1], BOXES[:1], SIZES[:1]), part_from_boxes(IDS[1:], BOXES[1:], SIZES[1:], FAILURES)])
    assert open(one, "rb").read() == open(two, "rb").read()


def test_boxes_become_whole_pixels_clipped_and_non_empty():
    boxes = np.array([[-3.2, 0.4, 10.6, 9.5], [5, 5, 5.3, 9], [0, 0, 500, 500], [1, 1, 2, 2]], np.float32)
    out, counts = pixel_boxes(boxes, np.array([3, 1]), np.array([[100, 80], [0, 0]]))
    assert out.tolist() == [[0, 0, 11, 10], [0, 0, 80, 100], [1, 1, 2, 2]] and counts.tolist() == [2, 1]


def test_large_images_store_int32_boxes(tmp_path):
    path = str(tmp_path / "big.store")
    save_proposals(path, ["a"], [np.array([[0, 0, 70000, 10]], np.float32)], [(20, 80000)])
    store = ProposalStore(path)
    assert store.section("boxes").dtype == np.int32 and store.boxes(0).tolist() == [[0, 0, 70000, 10]]


def test_truncated_foreign_and_unsorted_files_are_named(tmp_path):
    _, path = _write_both(tmp_path)
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.store"
    truncated.write_bytes(data[:-10])
    with pytest.raises(StoreError, match="truncated.store: truncated"):
        ProposalStore(truncated)
    foreign = tmp_path / "foreign.store"
    foreign.write_bytes(pickle.dumps({"ids": []}))
    with pytest.raises(StoreError, match="foreign.store: not a soco proposal store"):
        ProposalStore(foreign)
    # swap two ids of equal length in place: the id table is out of order
    swapped = tmp_path / "swapped.store"
    swapped.write_bytes(data.replace(b"n01/a.JPEG\nn01/b.JPEG", b"n01/b.JPEG\nn01/a.JPEG"))
    with pytest.raises(StoreError, match="swapped.store: image ids are not strictly sorted"):
        ProposalStore(swapped)
    with pytest.raises(ValueError, match="out of order"):
        write_store(str(tmp_path / "x.store"), [part_from_boxes(IDS[1:], BOXES[1:]), part_from_boxes(IDS[:1], BOXES[:1])])


def test_store_maps_instead_of_copying(tmp_path):
    _, path = _write_both(tmp_path)
    store = ProposalStore(path)
    assert isinstance(store.section("boxes"), np.memmap) and isinstance(store.offsets, np.memmap)
    clone = pickle.loads(pickle.dumps(store))  # what a spawned DataLoader worker receives
    np.testing.assert_array_equal(clone.boxes(0), store.boxes(0))
    assert len(pickle.dumps(store)) < 200


def test_load_proposals_reads_both_formats(tmp_path):
    pkl, path = _write_both(tmp_path)
    assert list(load_proposals(path)) == list(load_proposals(pkl)) == IDS
