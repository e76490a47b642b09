"""ImageNet-size paths at small N: the streaming merge, the index datasets (memory of a forked
worker, data order), and the zip source."""
import gc
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from soco.data.build import PositionSampler
from soco.data.image_folder import ImageFolderDataset, image_folder_dicts, list_images
from soco.data.indexed_datasets import IndexedDataset, ProposalDataset
from soco.data.proposals import read_proposal_file
from soco.proposals import generate
from soco.proposals.merging import merge
from soco.data.proposals.store import ProposalStore
from soco.data.soco_mapper import attach_proposals
from test_proposals_runner import _photos

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from bench_scale import synthetic_work_folder  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_work_folder(output, num_images, chunk_size=1000):
    """A finished generator work folder of ``num_images`` synthetic images, 55 boxes each."""
    ids = [f"n{i // 1300:04d}/{i:07d}.JPEG" for i in range(num_images)]
    synthetic_work_folder(output, ids, [(300 + i % 200, 400 + i % 150) for i in range(num_images)],
                          chunk_size=chunk_size)
    return ids


def test_streaming_merge_equals_a_one_shot_write(tmp_path):
    output = str(tmp_path / "p.store")
    fake_work_folder(output, 2500, chunk_size=700)
    summary = merge(output)
    assert summary["images"] == 2500 - 3 and summary["failures"] == 3 and summary["bytes_per_image"] < 600
    one_shot = str(tmp_path / "one.store")
    proposals = read_proposal_file(output)
    from soco.data.proposals import save_proposals

    ids = list(proposals.boxes)
    save_proposals(one_shot, ids, [proposals.boxes[i] for i in ids], [proposals.sizes[i] for i in ids],
                   sorted(proposals.failed.items()))
    assert open(one_shot, "rb").read() == open(output, "rb").read()
    pickled = str(tmp_path / "p.pkl")  # the same chunks merged into Detectron2's pickle
    os.rename(output + ".shards", pickled + ".shards")
    merge(pickled)
    back = read_proposal_file(pickled)
    assert list(back.boxes) == ids and back.failed == proposals.failed
    np.testing.assert_array_equal(back.boxes[ids[7]], proposals.boxes[ids[7]])


MERGE_SCRIPT = """
import resource, sys
sys.path.insert(0, "tests")
from test_scale import fake_work_folder
from soco.proposals.merging import merge
output, n = sys.argv[1], int(sys.argv[2])
fake_work_folder(output, n)
import gc; gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import os
pid = os.fork()
if pid == 0:
    merge(output)
    os._exit(0)
os.waitpid(pid, 0)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_merge_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    peaks = []
    for n in (2000, 20000):
        out = subprocess.run([sys.executable, "-c", MERGE_SCRIPT, str(tmp_path / f"p{n}.store"), str(n)], cwd=REPO,
                             check=True, capture_output=True, text=True)
        peaks.append(int(out.stdout.split()[-1]) / 1024)  # MiB
    # 10x the images (8 MB more boxes, 18,000 more ids): the merge's peak stays within a few MiB
    assert peaks[1] - peaks[0] < 5, peaks


def _uss_mib() -> float:
    with open("/proc/self/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


def _worker_growth(dataset, freeze: bool) -> float:
    """USS growth (MiB) of a forked child that reads every item once, as a DataLoader worker does
    over an epoch, then collects garbage; ``freeze``: ``gc.freeze()`` before the fork, as the
    loader now does."""
    gc.collect()
    if freeze:
        gc.freeze()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = _uss_mib()
        for i in range(len(dataset)):
            dataset[i]
        gc.collect()
        os.write(write, json.dumps(_uss_mib() - before).encode())
        os._exit(0)
    os.close(write)
    growth = json.loads(os.read(read, 100))
    os.waitpid(pid, 0)
    gc.unfreeze()
    return growth


def test_a_worker_touching_every_item_stays_small(tmp_path):
    output = str(tmp_path / "p.store")
    fake_work_folder(output, 20000)
    merge(output)
    store = ProposalStore(output)  # what attach_proposals builds for an image folder (no images needed here)
    dataset = ProposalDataset(ImageFolderDataset(str(tmp_path / "images"), index=store), store, None, None, output)
    assert len(dataset) == 20000 - 21  # i % 997 == 5 failed
    as_dicts = [dataset[i] for i in range(len(dataset))]  # today's path: a list of dicts with arrays
    index_growth, dict_growth = _worker_growth(dataset, freeze=True), _worker_growth(as_dicts, freeze=False)
    assert index_growth < 3, index_growth
    assert dict_growth > 3 * index_growth + 3, (index_growth, dict_growth)  # today's list of dicts


def test_same_data_order_and_items_as_the_list_of_dicts(tmp_path):
    root = str(tmp_path / "images")
    _photos(root, 7)
    open(os.path.join(root, "zero.jpg"), "wb").close()
    props = str(tmp_path / "p.store")
    generate(root, props, num_workers=0, progress=False)
    # what soco did before: every image listed as a dict, failed ones dropped, boxes attached
    proposals = read_proposal_file(props)
    before = [dict(d, proposal_boxes=proposals.boxes[d["image_id"]], proposal_image_size=proposals.sizes[d["image_id"]])
              for d in image_folder_dicts(root) if d["image_id"] in proposals.boxes]
    listed = ImageFolderDataset(root, cache_dir=str(tmp_path / "cache"))
    assert len(listed) == 8  # listed once into the cache: the merge of two sorted id tables
    open(os.path.join(root, "late.jpg"), "wb").close()  # the cached listing is reused (a resume sees the same)
    assert len(ImageFolderDataset(root, cache_dir=str(tmp_path / "cache"))) == 8
    os.remove(os.path.join(root, "late.jpg"))
    for dataset in (attach_proposals(ImageFolderDataset(root), props),  # ids from the store, no listing
                    attach_proposals(listed, props), attach_proposals(image_folder_dicts(root), props)):
        assert len(dataset) == len(before) == 7
        for old, new in zip(before, dataset):
            assert old.keys() == new.keys() and old["file_name"] == new["file_name"]
            np.testing.assert_array_equal(old["proposal_boxes"], new["proposal_boxes"])
    # same length and seed -> the sampler draws the same positions, also from a resumed start
    order = [i for _, (_, i) in zip(range(20), PositionSampler(len(before), seed=3))]
    resumed = [i for _, (_, i) in zip(range(10), PositionSampler(len(dataset), seed=3, start=10))]
    assert resumed == order[10:]
    coke = IndexedDataset(attach_proposals(ImageFolderDataset(root), props))
    assert [coke[i]["instance_index"] for i in order] == order


def _zip_folder(root, archive, damaged=None):
    """Zip ``root`` (members alternately stored and deflated); flip bytes inside the member
    ``damaged`` in the archive afterwards, as a bad copy would."""
    with zipfile.ZipFile(archive, "w") as z:
        for k, rel in enumerate(list_images(root)):
            z.write(os.path.join(root, rel), rel, zipfile.ZIP_DEFLATED if k % 2 else zipfile.ZIP_STORED)
        z.writestr("README.txt", "not an image")
    if damaged:
        with zipfile.ZipFile(archive) as z:
            start = z.getinfo(damaged).header_offset + 30 + len(damaged) + 300
        with open(archive, "r+b") as f:
            f.seek(start)
            data = f.read(100)
            f.seek(start)
            f.write(bytes(b ^ 0x5A for b in data))


def test_zip_source_equals_the_extracted_folder(tmp_path):
    root = str(tmp_path / "train")
    _photos(root, 6)
    archive = str(tmp_path / "train.zip")
    _zip_folder(root, archive, damaged="class1/img004.jpg")
    with open(str(tmp_path / "train_map.txt"), "w") as f:  # the official layout: path and label
        f.writelines(f"{rel}\t{k % 3}\n" for k, rel in enumerate(list_images(root)))
    assert list_images(archive) == list_images(root)
    folder_props, zip_props = str(tmp_path / "folder.store"), str(tmp_path / "zip.store")
    generate(root, folder_props, num_workers=0, progress=False)
    summary = generate(archive, zip_props, num_workers=1, progress=False)
    assert summary["failures"] == 1
    failures = json.load(open(str(tmp_path / "zip.failures.json")))
    assert failures[0]["id"] == "class1/img004.jpg"
    folder, inside = ProposalStore(folder_props), ProposalStore(zip_props)
    assert inside.ids() == [i for i in folder.ids() if i != "class1/img004.jpg"]
    for k, image_id in enumerate(inside.ids()):
        np.testing.assert_array_equal(inside.boxes(k), folder.boxes(folder.index(image_id)))
    from soco.data.image_io import read_image_chw

    from_zip = attach_proposals(ImageFolderDataset(archive, cache_dir=str(tmp_path / "cache")), zip_props)
    assert from_zip.base.image_list == str(tmp_path / "train_map.txt")  # the official map, used by default
    item = from_zip[0]
    assert item["file_name"] == f"{os.path.abspath(archive)}@/{item['image_id']}"
    assert (read_image_chw(item["file_name"]) == read_image_chw(os.path.join(root, item["image_id"]))).all()
    from soco.data.image_io import ImageReadError

    assert os.path.isfile(archive + ".index")  # the member index lives next to its archive
    with pytest.raises(ImageReadError, match=r"train.zip@/class1/img004.jpg.*damaged zip member"):
        read_image_chw(f"{archive}@/class1/img004.jpg")
